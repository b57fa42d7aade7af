"""Checkpoints: safetensors for tensors, JSON for loop state, a manifest for integrity.

A checkpoint is a directory ``checkpoints/step-XXXXXXXX`` written under a temporary name
and renamed when complete; small pointer files (``latest``, ``best``) are replaced
atomically too. A crash at any moment leaves the previous checkpoint intact, and a
truncated or altered file is caught by the manifest before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recengine.errors import UserError

MANIFEST = "manifest.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(root: Path, name: str, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> Path:
    """Write ``{file: tensors}`` as safetensors plus ``state.json`` into ``root/name``."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for filename, group in tensors.items():
        save_file({k: v.detach().contiguous().cpu() for k, v in group.items()}, str(tmp / filename))
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    manifest = {f.name: {"bytes": f.stat().st_size, "sha256": _sha256(f)} for f in sorted(tmp.iterdir())}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def verify(path: Path) -> None:
    """Check every file of a checkpoint against its manifest; raise UserError naming the bad file."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"{path}: not a complete checkpoint (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{manifest_path}: corrupt manifest") from None
    for filename, expected in manifest.items():
        f = path / filename
        if not f.is_file():
            raise UserError(f"{f}: missing from checkpoint")
        if f.stat().st_size != expected["bytes"] or _sha256(f) != expected["sha256"]:
            raise UserError(f"{f}: truncated or altered (size or hash differs from the manifest); use an earlier checkpoint")


def load_tensors(path: Path, filename: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path / filename))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path / filename}: cannot read tensors: {exc}") from None


def load_state(path: Path) -> dict[str, Any]:
    return json.loads((path / "state.json").read_text())


def set_pointer(root: Path, pointer: str, name: str) -> None:
    atomic_write_text(root / pointer, name + "\n")


def read_pointer(root: Path, pointer: str) -> Path | None:
    f = root / pointer
    if not f.is_file():
        return None
    target = root / f.read_text().strip()
    return target if target.is_dir() else None


def prune(root: Path, keep_last: int, protect: set[str]) -> None:
    steps = sorted(p.name for p in root.glob("step-*") if p.is_dir())
    for name in steps[:-keep_last]:
        if name not in protect:
            shutil.rmtree(root / name, ignore_errors=True)


def load_into_model(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path, required: Iterable[str]) -> None:
    """Load ``tensors`` into ``model``; one clear error when names or shapes differ.

    ``required`` names the tensors the checkpoint must hold (all of them for a full model,
    the adapter's alone for an adapted one).
    """
    expected = model.state_dict()
    for key, value in tensors.items():
        if key not in expected:
            raise UserError(f"{source}: tensor '{key}' is not in this model: the checkpoint comes from a different model")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise UserError(
                f"{source}: '{key}' has shape {list(value.shape)} but the recipe's model has {list(expected[key].shape)}: "
                "the checkpoint comes from a different model shape"
            )
    missing = [k for k in required if k not in tensors]
    if missing:
        raise UserError(f"{source}: tensors missing from checkpoint: {', '.join(missing[:5])}: the checkpoint comes from a different model")
    model.load_state_dict(tensors, strict=False)


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON metadata."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, param_state in sd["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
