"""A run directory and what lives in it.

    <run>/recipe.toml        the resolved recipe (every default filled in)
    <run>/data.json          catalog size and the original item ids
    <run>/metrics.jsonl      one JSON record per validation / final evaluation
    <run>/results.json       final validation and test metrics, model and popularity baseline
    <run>/hardware.json      the machine and versions it ran on (recengine/hardware.py)
    <run>/tensorboard/       TensorBoard logs (with the tensorboard monitor)
    <run>/checkpoints/       step-XXXXXXXX/ checkpoints, plus `latest` and `best` pointers
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recengine import checkpoint
from recengine.errors import UserError


@dataclass(frozen=True)
class RunDir:
    path: Path

    recipe = property(lambda self: self.path / "recipe.toml")
    data = property(lambda self: self.path / "data.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    results = property(lambda self: self.path / "results.json")
    hardware = property(lambda self: self.path / "hardware.json")
    checkpoints = property(lambda self: self.path / "checkpoints")
    tensorboard = property(lambda self: self.path / "tensorboard")
    profile = property(lambda self: self.path / "profile")

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        run = cls(Path(path))
        if not run.path.is_dir():
            raise UserError(f"{path}: run directory not found (train one with `recengine train RECIPE`)")
        if not run.recipe.is_file():
            raise UserError(f"{path}: not a run directory (no recipe.toml inside)")
        return run

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_json(self, path: Path, value: Any) -> None:
        checkpoint.atomic_write_text(path, json.dumps(value, indent=1))

    def read_data_info(self) -> dict[str, Any]:
        if not self.data.is_file():
            raise UserError(f"{self.data}: missing; this run never finished preparing its data")
        return json.loads(self.data.read_text())

    def checkpoint(self, which: str = "best") -> Path:
        """The checkpoint to load: 'best', 'latest', or a step directory name."""
        found = checkpoint.read_pointer(self.checkpoints, which)
        if found is None and which == "best":
            found = checkpoint.read_pointer(self.checkpoints, "latest")
        if found is None and (self.checkpoints / which).is_dir():
            found = self.checkpoints / which
        if found is None and which in ("best", "latest"):  # a pointer to a checkpoint a killed process was replacing
            found = checkpoint.newest_complete(self.checkpoints)
        if found is None:
            raise UserError(f"{self.path}: no '{which}' checkpoint yet (was the run stopped before its first checkpoint?)")
        return found
