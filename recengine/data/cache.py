"""Preprocessed datasets on disk as .npy arrays plus JSON; never pickle.

An entry lives in ``<cache_dir>/<file stem>-<key>/`` where ``key`` hashes the source file's
identity (size, mtime and a SHA-1 hash of its whole content) together with the reading and
preprocessing options and the cache format version. A changed file or option gives another
key, hence a rebuild. Entries are written to a temporary folder and renamed into place, so an
interrupted build never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from recengine.data.sequences import Dataset, Sequences
from recengine.errors import UserError

VERSION = 1
ARRAYS = ("items", "offsets", "timestamps")


def file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    with open(path, "rb") as f:
        # SHA-1 runs on the CPU's SHA instructions (~4x BLAKE2 here); it guards against
        # changed files, not attackers, so its weakness against forged collisions is irrelevant.
        digest = hashlib.file_digest(f, "sha1").hexdigest()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha1": digest}


def cache_key(identity: dict[str, Any], options: dict[str, Any]) -> str:
    text = json.dumps({"version": VERSION, "file": identity, "options": options}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def entry_dir(cache_dir: Path, source: Path, key: str) -> Path:
    return cache_dir / f"{source.stem}-{key}"


def load(entry: Path) -> tuple[Dataset, dict[str, Any]] | None:
    """The cached dataset and its metadata, or None when there is no complete entry."""
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays = {name: np.load(entry / f"{name}.npy", allow_pickle=False)
                  for name in ARRAYS if (entry / f"{name}.npy").is_file()}
        item_ids = json.loads((entry / "item_ids.json").read_text())
        sequences = Sequences(arrays["items"], arrays["offsets"], int(meta["num_items"]))
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{entry}: damaged cache entry ({exc}); delete that folder to rebuild it") from None
    return Dataset(sequences, item_ids, arrays.get("timestamps")), meta


def save(entry: Path, dataset: Dataset, meta: dict[str, Any]) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        np.save(tmp / "items.npy", dataset.sequences.items, allow_pickle=False)
        np.save(tmp / "offsets.npy", dataset.sequences.offsets, allow_pickle=False)
        if dataset.timestamps is not None:
            np.save(tmp / "timestamps.npy", dataset.timestamps, allow_pickle=False)
        (tmp / "item_ids.json").write_text(json.dumps(dataset.item_ids))
        # meta.json last: its presence marks a complete entry.
        (tmp / "meta.json").write_text(json.dumps({**meta, "num_items": dataset.num_items, "version": VERSION}, indent=2))
        if entry.exists() and not (entry / "meta.json").is_file():
            shutil.rmtree(entry, ignore_errors=True)  # an incomplete folder, not one of ours: renames are atomic
        try:
            os.replace(tmp, entry)
        except OSError:
            # Runs started side by side on one file each build the entry; the first rename wins.
            # The key hashes the file's content and the options, so the winner's entry is ours too.
            if not (entry / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
