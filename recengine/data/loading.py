"""File -> cached, preprocessed Dataset: what the movielens, amazon and user-item plugins share."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from recengine.data import cache
from recengine.data.formats import FORMATS, formats_of, read_interactions
from recengine.data.preprocess import Preprocessing, preprocess
from recengine.data.sequences import Dataset


class FileDatasetOptions(BaseModel):
    """The `[dataset]` keys of every file-based dataset plugin."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(..., min_length=1, description="Interactions file (plain or .gz); relative paths are from the working directory.")
    format: str = Field("auto", description="File format, or 'auto' to recognise it from the first lines (see docs/datasets.md).")
    min_rating: float | None = Field(None, description="Keep interactions rated at least this (unset: keep all).")
    k_core: int = Field(0, ge=0, description="Iterative k-core: users and items with fewer interactions are dropped until stable (0: off).")
    duplicates: Literal["keep", "first", "last"] = Field("keep", description="Repeated (user, item) pairs: keep all, or only the first/last in time.")
    min_length: int = Field(1, ge=1, description="Drop users with fewer interactions than this (after k-core).")
    on_bad_lines: Literal["error", "skip"] = Field("error", description="A malformed line stops with file:line ('error') or is dropped and counted ('skip').")
    cache_dir: str = Field(".cache/recengine", description="Where preprocessed sequences are cached ('' disables the cache).")

    FAMILY: ClassVar[str] = ""  # each plugin's subclass names the formats it reads

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        allowed = formats_of(cls.FAMILY) if cls.FAMILY else list(FORMATS)
        if value != "auto" and value not in allowed:
            raise ValueError(f"unknown format '{value}' (formats: auto, {', '.join(allowed)})")
        return value

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.min_rating, self.k_core, self.duplicates, self.min_length)


def load_file_dataset(options: FileDatasetOptions, use_cache: bool = True,
                      log=lambda message: None) -> tuple[Dataset, dict[str, Any]]:
    """The dataset and a metadata dict (counts, timings, cache entry); builds the cache on a miss."""
    family = options.FAMILY
    path = Path(options.path).expanduser()
    start = time.perf_counter()
    key_options = {"family": family, **options.model_dump(mode="json", exclude={"cache_dir"})}
    entry = None
    if options.cache_dir and use_cache and path.is_file():
        identity = cache.file_identity(path)
        entry = cache.entry_dir(Path(options.cache_dir).expanduser(), path, cache.cache_key(identity, key_options))
        hit = cache.load(entry)
        if hit is not None:
            dataset, meta = hit
            log(f"loaded {entry} in {time.perf_counter() - start:.2f} s")
            return dataset, {**meta, "cache": str(entry), "cache_hit": True}
    raw = read_interactions(path, options.format, family, options.on_bad_lines)
    parsed = time.perf_counter()
    log(f"parsed {len(raw):,} interactions from {path} in {parsed - start:.1f} s"
        + (f" ({raw.skipped:,} bad lines skipped)" if raw.skipped else ""))
    dataset, report = preprocess(raw, options.preprocessing(), source=str(path))
    for name, removed in report.steps:
        log(f"  {name}: removed {removed:,}")
    meta = {"source": str(path), "options": key_options, "raw_interactions": len(raw), "skipped_lines": raw.skipped,
            "steps": report.steps, "parse_s": round(parsed - start, 3), "preprocess_s": round(time.perf_counter() - parsed, 3)}
    if entry is not None:
        cache.save(entry, dataset, meta)
        log(f"cached in {entry}")
    return dataset, {**meta, "cache": str(entry) if entry else None, "cache_hit": False}
