"""Fine-tuning from a trained run: ``[init] from_run = "runs/..."`` in a recipe.

The base run's weights are loaded into the freshly built model *before* the adapter wraps
it, so the base state-dict keys always match. An adapted run records which base checkpoint
it started from and the sha256 of that checkpoint's weights in ``<run>/base.json``; every
later load (resume, evaluate, recommend, export) checks that the base still has exactly
those weights, because an adapter-only checkpoint means nothing on top of other weights.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from torch import nn

from recengine import checkpoint
from recengine.errors import UserError
from recengine.recipe import InitSection
from recengine.runs import RunDir

BASE_FILE = "base.json"


def weights_hash(checkpoint_dir: Path) -> str:
    """sha256 of the checkpoint's model.safetensors, as its manifest records it (verify() checked the file)."""
    manifest = json.loads((checkpoint_dir / checkpoint.MANIFEST).read_text())
    return manifest["model.safetensors"]["sha256"]


def open_base(path: str) -> RunDir:
    base = Path(path)
    if not (base / "recipe.toml").is_file():
        raise UserError(f"init.from_run: base run '{path}' not found (no {base / 'recipe.toml'}); "
                        "train the base first or fix the path")
    recipe = tomllib.loads((base / "recipe.toml").read_text())
    if recipe.get("init", {}).get("from_run") or recipe.get("adapter", {}).get("name", "none") != "none":
        raise UserError(f"init.from_run: '{path}' is itself an adapted run (its checkpoints hold adapter weights only); "
                        "name the fully trained base run instead")
    return RunDir(base)


def init_from_run(model: nn.Module, init: InitSection, run: RunDir | None = None) -> dict[str, Any] | None:
    """Load the base run's weights into ``model`` (not yet adapted); a no-op without ``init.from_run``.

    With ``run``: the first call records the base reference in ``run/base.json``; later calls
    load exactly that checkpoint and refuse if its weights changed. Returns the reference.
    """
    if init.from_run is None:
        return None
    base = open_base(init.from_run)
    record_file = run.path / BASE_FILE if run is not None else None
    recorded = json.loads(record_file.read_text()) if record_file is not None and record_file.is_file() else None
    changed = (f"init.from_run: base run '{init.from_run}' changed since this adapter was trained on its checkpoint "
               f"{recorded and recorded['checkpoint']} (sha256 {recorded and recorded['sha256'][:12]}); "
               "restore that base run or train the adapter again")
    if recorded is None:
        path = base.checkpoint("best")
    elif (base.checkpoints / recorded["checkpoint"]).is_dir():
        path = base.checkpoints / recorded["checkpoint"]
    else:
        raise UserError(changed)
    checkpoint.verify(path)
    digest = weights_hash(path)
    if recorded is not None and digest != recorded["sha256"]:
        raise UserError(changed)
    if run is not None and run.data.is_file() and base.data.is_file() and (
            json.loads(run.data.read_text()) != json.loads(base.data.read_text())):
        raise UserError(f"init.from_run: base run '{init.from_run}' was trained on a different catalog (data.json differs); "
                        "an adapter needs the same item ids as its base")
    checkpoint.load_into_model(model, checkpoint.load_tensors(path, "model.safetensors"), path, model.state_dict().keys())
    reference = {"run": init.from_run, "checkpoint": path.name, "sha256": digest}
    if record_file is not None and recorded is None:
        checkpoint.atomic_write_text(record_file, json.dumps(reference, indent=1))
    return reference


def train_output_layer(model: nn.Module) -> None:
    """`init.train_output`: let the output layer train too (after the adapter froze the base)."""
    weight, bias = model.output_embedding()
    if not isinstance(weight, nn.Parameter):
        raise UserError("init.train_output: this model's output layer is tied to its item embedding, so training it "
                        "would change the frozen base; set init.train_output=false or train an untied model (model.tied=false)")
    for p in (weight, bias):
        if p is not None:
            p.requires_grad_(True)
