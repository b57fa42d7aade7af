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
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written temp file behind
        raise


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable across a power cut, not just a killed process.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the rename is still atomic
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(root: Path, name: str, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> Path:
    """Write ``{file: tensors}`` as safetensors plus ``state.json`` into ``root/name``.

    Any OSError (a full disk, a lost mount) removes the partial copy and becomes a
    UserError; checkpoints written before are untouched.
    """
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    try:
        tmp.mkdir()
        _write_files(tmp, tensors, state)
        _install(tmp, root / name)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(
            f"{root / name}: cannot write checkpoint ({exc.strerror or exc}); earlier checkpoints in {root} are intact: "
            f"free disk space, then continue with `recengine train --resume {root.parent}`"
        ) from None
    return root / name


def _write_files(tmp: Path, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> None:
    for filename, group in tensors.items():
        save_file({k: v.detach().contiguous().cpu() for k, v in group.items()}, str(tmp / filename))
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    manifest = {f.name: {"bytes": f.stat().st_size, "sha256": _sha256(f)} for f in sorted(tmp.iterdir())}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def _install(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` to ``final``. A directory of the same name (the same step,
    saved again after validation) is first renamed aside, never deleted in place, so a kill
    at any moment leaves a complete checkpoint under some name (see `newest_complete`)."""
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(root: Path) -> None:
    """Partial copies left by a process killed while saving or pruning."""
    for leftover in list(root.glob(".tmp-*")) + list(root.glob(".old-*")) + list(root.glob(".trash-*")):
        shutil.rmtree(leftover, ignore_errors=True)


def verify(path: Path) -> None:
    """Check every file of a checkpoint against its manifest; raise UserError naming the bad file.

    Every file present must be listed (an unlisted file would be loaded unchecked) and
    every listed file must have its recorded size and sha256.
    """
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"{path}: not a complete checkpoint (no {MANIFEST}); use an earlier checkpoint")
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = {str(name): (int(e["bytes"]), str(e["sha256"])) for name, e in manifest.items()}
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        raise UserError(f"{manifest_path}: corrupt manifest; use an earlier checkpoint") from None
    for f in sorted(path.iterdir()):
        if f.name != MANIFEST and f.name not in entries:
            raise UserError(f"{f}: not listed in {MANIFEST}: the checkpoint was altered; use an earlier checkpoint")
    for filename, (size, sha256) in entries.items():
        f = path / filename
        if "/" in filename or "\\" in filename or not f.is_file():
            raise UserError(f"{f}: missing from checkpoint; use an earlier checkpoint")
        if f.stat().st_size != size or _sha256(f) != sha256:
            raise UserError(f"{f}: truncated or altered (size or hash differs from the manifest); use an earlier checkpoint")


def newest_complete(root: Path) -> Path | None:
    """The newest checkpoint that passes `verify`: the fallback when a pointer names a
    checkpoint that is gone (a process killed between the two renames of `_install`)."""
    candidates = list(root.glob("step-*")) + list(root.glob(".old-step-*"))
    for path in sorted(candidates, key=lambda p: p.name.removeprefix(".old-"), reverse=True):
        try:
            verify(path)
            return path
        except UserError:
            continue
    return None


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
            # Renamed first so a kill mid-delete never leaves a half-deleted `step-*`.
            trash = root / f".trash-{name}-{os.getpid()}"
            os.replace(root / name, trash)
            shutil.rmtree(trash, ignore_errors=True)


def load_into_model(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path, required: Iterable[str],
                    load=lambda model, tensors: model.load_state_dict(tensors, strict=False)) -> None:
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
    load(model, tensors)  # FSDP2 passes its own loader that shards the full tensors (recengine/distributed.py)


def state_dict_to_tensors(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, param_state in sd["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def tensors_to_state_dict(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
