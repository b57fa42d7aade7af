"""Self-contained inference artifacts: ``recengine export RUN_DIR --format F --out DIR``.

DIR holds

    model.pt2 | model.torchscript.pt | model.onnx   the artifact (one per format)
    item_ids.json                                   original id of model id i at index i (0 = padding)
    metadata.json                                   format, max_len, input_length, k, num_items, ...

The artifact takes left-padded model-id sequences, int64 [B, max_len - 1] with 0 as
padding, and returns (top-k model ids int64 [B, k], scores float32 [B, k]); history
exclusion (an item in the input is never recommended) happens inside it. The batch size is
free; the length is fixed. ``load_artifact(DIR)`` wraps any of them back into
``.recommend(histories, k)`` over original ids.

A LoRA adapter is merged before export and iLoRA is exported unmerged with its gate: each
adapter says how through ``Adapter.for_export(model)``. Every export is checked against the
eager model on random histories of random lengths before it is moved into DIR.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch

from recengine import checkpoint, __version__
from recengine.data.batching import gather_windows
from recengine.errors import UserError
from recengine.inference import ItemIndex, Recommendations, TopK, left_padded, load_model

ARTIFACT_FILES = {"torch-export": "model.pt2", "torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
FORMATS = tuple(ARTIFACT_FILES)
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def missing_packages(fmt: str) -> list[str]:
    """Packages a format needs that are not installed (the onnx exporter and its runtime)."""
    needed = ONNX_PACKAGES if fmt == "onnx" else ()
    return [p for p in needed if importlib.util.find_spec(p) is None]


# --- writers: module, example input, path -> file on disk ---------------------------------

def _batch_dim() -> dict:
    return {"tokens": {0: torch.export.Dim("batch", min=1, max=1 << 16)}}


def _write_torch_export(module: TopK, example: torch.Tensor, path: Path) -> None:
    program = torch.export.export(module, (example,), dynamic_shapes=_batch_dim(), strict=False)
    torch.export.save(program, path)


def _write_torchscript(module: TopK, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():  # tracer and deprecation warnings; the check below is what counts
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, str(path))


def _write_onnx(module: TopK, example: torch.Tensor, path: Path) -> None:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=["tokens"], output_names=["ids", "scores"],
                          dynamic_shapes=_batch_dim(), dynamo=True, external_data=False, verbose=False)


WRITERS: dict[str, Callable[[TopK, torch.Tensor, Path], None]] = {
    "torch-export": _write_torch_export, "torchscript": _write_torchscript, "onnx": _write_onnx,
}


# --- readers: path -> callable(tokens [B, L] int64) -> (ids, scores) -----------------------

def _read_torch_export(path: Path, device: str):
    return torch.export.load(path).module()


def _read_torchscript(path: Path, device: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location=device)


def _read_onnx(path: Path, device: str):
    import onnxruntime

    providers = ["CUDAExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
    session = onnxruntime.InferenceSession(str(path), providers=providers)

    def run(tokens: torch.Tensor):
        ids, scores = session.run(["ids", "scores"], {"tokens": tokens.cpu().numpy()})
        return torch.from_numpy(ids).to(tokens.device), torch.from_numpy(scores).to(tokens.device)

    return run


READERS = {"torch-export": _read_torch_export, "torchscript": _read_torchscript, "onnx": _read_onnx}


class ArtifactRecommender:
    """An exported artifact with its item-id mapping: ``.recommend(histories, k)`` like the
    Python API (``k`` at most the exported k), and ``.top_k(tokens)`` for padded model ids."""

    def __init__(self, directory: str | Path, device: str = "cpu"):
        self.directory = Path(directory)
        meta_path = self.directory / "metadata.json"
        if not meta_path.is_file():
            raise UserError(f"{directory}: not an export directory (no metadata.json); make one with `recengine export`")
        self.metadata = json.loads(meta_path.read_text())
        fmt = self.metadata["format"]
        if missing_packages(fmt):
            raise UserError(f"loading a {fmt} artifact needs {', '.join(missing_packages(fmt))}: pip install {' '.join(ONNX_PACKAGES)}")
        self.items = ItemIndex(json.loads((self.directory / "item_ids.json").read_text()))
        self.device, self.k, self.input_length = device, self.metadata["k"], self.metadata["input_length"]
        self.run = READERS[fmt](self.directory / self.metadata["artifact"], device)

    @torch.no_grad()
    def top_k(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.run(tokens)

    def recommend(self, histories, k: int | None = None) -> Recommendations:
        k = self.k if k is None else k
        if not 1 <= k <= self.k:
            raise UserError(f"k must be between 1 and {self.k}, the k this artifact was exported with (got {k})")
        encoded = self.items.encode_all(histories)
        ids, scores = self.top_k(left_padded(encoded, self.input_length, self.device))
        return [self.items.decode(i[:k], s[:k]) for i, s in zip(ids.tolist(), scores.tolist())]


def load_artifact(directory: str | Path, device: str = "cpu") -> ArtifactRecommender:
    return ArtifactRecommender(directory, device)


# --- the check --------------------------------------------------------------------------

def random_windows(num_items: int, length: int, batch: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
    """Left-padded random histories of random lengths 1..length (repeats allowed)."""
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    items = torch.randint(1, num_items + 1, (int(lengths.sum()),), generator=generator)
    ends = lengths.cumsum(0)
    return gather_windows(items, ends - lengths, ends, length).to(device)


def check_artifact(module: TopK, artifact: ArtifactRecommender, batches=(1, 7, 64), seed: int = 0, device="cpu") -> None:
    """Raise ``UserError`` unless the artifact gives the eager model's top-k on random histories.

    Same top-k means: the artifact's scores match the eager top-k scores, and each id it
    returns has that score in the eager model, so ids may differ only between tied items.
    """
    generator = torch.Generator().manual_seed(seed)
    checked = 0
    for batch in batches:
        tokens = random_windows(module.num_items, module.max_len - 1, batch, generator, device)
        with torch.no_grad():
            full = module.scores(tokens)
            if module.exclude_history:
                full = full.scatter(1, tokens, float("-inf"))
            ref = full.topk(module.k, dim=1)
        ids, scores = artifact.top_k(tokens)
        tol = dict(rtol=1e-4, atol=1e-4)
        same = torch.isclose(scores.float(), ref.values, **tol) & torch.isclose(full.gather(1, ids.long()), scores.float(), **tol)
        bad = (~same.all(dim=1)).nonzero().flatten().tolist()
        if bad:
            row = bad[0]
            raise UserError(
                f"the {artifact.metadata['format']} artifact differs from the eager model on {len(bad)} of {batch} random histories "
                f"(e.g. eager top ids {ref.indices[row, :5].tolist()} vs artifact {ids[row, :5].tolist()}); nothing was written")
        checked += batch
    artifact.metadata["checked_histories"] = checked


# --- export -----------------------------------------------------------------------------

def for_export(model, adapter):
    """The model to export: LoRA merged, iLoRA unmerged with its gate (the adapter decides)."""
    convert = getattr(adapter, "for_export", None)
    if convert is None:
        raise UserError(f"adapter {type(adapter).__name__} has no for_export(model); it cannot be exported yet")
    return convert(model).eval()


def export_run(run_dir: str | Path, fmt: str, out: str | Path, k: int = 20, exclude_history: bool = True,
               which: str = "best", overwrite: bool = False, device: str = "cpu") -> Path:
    """Export ``run_dir``'s ``which`` checkpoint to ``out``; returns ``out``. Atomic: ``out`` is
    written only once the artifact has passed its check against the eager model."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if missing := missing_packages(fmt):
        raise UserError(f"--format {fmt} needs the {', '.join(missing)} package(s): pip install {' '.join(ONNX_PACKAGES)}")
    if k < 1:
        raise UserError(f"k must be at least 1 (got {k})")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it or pick another --out")
    model, adapter, item_ids = load_model(run_dir, which)
    module = TopK(for_export(model, adapter).to(device), k, exclude_history).eval()
    example = random_windows(module.num_items, module.max_len - 1, 2, torch.Generator().manual_seed(1), device)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        try:
            WRITERS[fmt](module, example, staging / ARTIFACT_FILES[fmt])
        except Exception as exc:  # the exporter's reason is the user's answer
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise UserError(f"--format {fmt} cannot represent this model ({type(module.model).__name__}): "
                            f"{type(exc).__name__}: {reason}") from None
        num_items = module.num_items
        names = list(item_ids) if item_ids else [str(i) for i in range(num_items + 1)]
        metadata = {
            "format": fmt, "artifact": ARTIFACT_FILES[fmt], "max_len": module.max_len, "input_length": module.max_len - 1,
            "k": module.k, "num_items": num_items, "exclude_history": exclude_history, "padding_id": 0,
            "input": "int64 [batch, input_length], left-padded model ids (see item_ids.json), 0 = padding",
            "outputs": ["ids int64 [batch, k]", "scores float32 [batch, k]"],
            "device": device, "run_dir": str(run_dir), "checkpoint": which,
            "recengine_version": __version__, "torch_version": torch.__version__,
        }
        checkpoint.atomic_write_text(staging / "item_ids.json", json.dumps(names))
        checkpoint.atomic_write_text(staging / "metadata.json", json.dumps(metadata, indent=1))
        artifact = load_artifact(staging, device)
        check_artifact(module, artifact, device=device)
        checkpoint.atomic_write_text(staging / "metadata.json", json.dumps(artifact.metadata, indent=1))
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
