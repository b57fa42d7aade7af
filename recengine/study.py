"""Studies: recipes x precision x compiler x adapter, benchmarked (and optionally trained).

A study file (TOML)::

    [study]
    name = "scaling"
    bench_steps = 20          # timed steps per cell (median reported)
    profile_active = 3        # steps under torch.profiler for self CUDA/CPU time (0: no profile pass)
    train = false             # also train cells (all, or those matching train_where)
    train_where = { adapter = "none" }

    [[recipes]]
    name = "5m"                              # label in tables and plots
    recipe = "recipes/scaling-base.toml"     # relative to the study file
    overrides = ["model.hidden=128"]

    [matrix]
    precision = ["fp32", "amp"]
    compiler = ["eager", "torch-compile"]
    adapter = ["none", { name = "ilora", rank = 8 }]   # a table sets plugin options

Each cell's result is saved as it finishes (``<out>/cells/<cell>.json``), so an interrupted
study resumes where it stopped: finished cells are not rerun unless their settings changed.
A cell that fails (a missing plugin, out of memory...) is recorded with its error and the
study goes on. The table and plots are written by ``recengine.report``.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console

from recengine import checkpoint
from recengine.errors import UserError
from recengine.plugins import Registry
from recengine.recipe import _error_lines, apply_overrides, read_toml, resolve
from recengine.report import row_from_bench, write_report
from recengine.runs import RunDir


class StudySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, description="Study name; results go to <output_dir>/<name>.")
    output_dir: str = Field("runs/studies", description="Parent of the study's result directory.")
    bench_steps: int = Field(20, ge=1, description="Timed training steps per cell (the median is reported).")
    bench_warmup: int = Field(5, ge=0, description="Untimed steps first (compilation, allocator warm-up).")
    profile_active: int = Field(3, ge=0, description="Steps recorded by torch.profiler per cell (0: skip the profile pass).")
    train: bool = Field(False, description="Also train cells (all, or those matching train_where).")
    train_where: dict[str, str] = Field({}, description="Train only cells whose recipe/precision/compiler/adapter match these names.")


class StudyRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, description="Label of this recipe in tables and plots (e.g. the model size).")
    recipe: str = Field(..., description="Recipe TOML, relative to the study file.")
    overrides: list[str] = Field([], description="section.key=value overrides applied to the recipe.")
    train: bool | None = Field(None, description="Train this recipe's cells (default: study.train).")


PluginChoice = str | dict[str, Any]


class Matrix(BaseModel):
    model_config = ConfigDict(extra="forbid")
    precision: list[PluginChoice] = Field(["fp32"], min_length=1)
    compiler: list[PluginChoice] = Field(["eager"], min_length=1)
    adapter: list[PluginChoice] = Field(["none"], min_length=1)


class StudyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    study: StudySettings
    recipes: list[StudyRecipe] = Field(..., min_length=1)
    matrix: Matrix = Matrix()


@dataclass
class Cell:
    recipe: StudyRecipe
    recipe_path: Path
    plugins: dict[str, dict[str, Any]]  # kind -> recipe section ({"name": ..., options...})
    labels: dict[str, str]  # kind -> label (a matrix table may name itself with `label`)

    @property
    def id(self) -> str:
        raw = "-".join([self.recipe.name] + [self.labels[k] for k in ("precision", "compiler", "adapter")])
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", raw)

    def names(self) -> dict[str, str]:
        return {"recipe": self.recipe.name, **{k: v["name"] for k, v in self.plugins.items()}}


@dataclass
class Study:
    settings: StudyFile
    path: Path
    cells: list[Cell]


def _section(choice: PluginChoice) -> tuple[dict[str, Any], str]:
    if isinstance(choice, str):
        return {"name": choice}, choice
    section = dict(choice)
    label = str(section.pop("label", section.get("name", "?")))
    if "name" not in section:
        raise UserError(f"matrix entry {choice}: a table needs name = \"...\" (the plugin)")
    return section, label


def load_study(path: str | Path) -> Study:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: study file not found (see studies/ci-tiny.toml for an example)")
    data = read_toml(path)
    try:
        settings = StudyFile.model_validate(data)
    except ValidationError as err:
        raise UserError("\n".join(_error_lines(str(path), (), err, StudyFile))) from None
    cells = []
    for recipe in settings.recipes:
        recipe_path = (path.parent / recipe.recipe).resolve()
        if not recipe_path.is_file():
            raise UserError(f"{path}: recipes '{recipe.name}': recipe file {recipe_path} not found (paths are relative to the study file)")
        m = settings.matrix
        for combo in itertools.product(m.precision, m.compiler, m.adapter):
            sections = [_section(c) for c in combo]
            kinds = ("precision", "compiler", "adapter")
            cells.append(Cell(recipe, recipe_path, {k: s for k, (s, _) in zip(kinds, sections)},
                              {k: label for k, (_, label) in zip(kinds, sections)}))
    ids = [c.id for c in cells]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UserError(f"{path}: cells {', '.join(duplicates)} appear twice; give matrix tables distinct `label`s or recipes distinct names")
    return Study(settings, path, cells)


def cell_recipe_data(cell: Cell) -> dict[str, Any]:
    data = apply_overrides(read_toml(cell.recipe_path), cell.recipe.overrides)
    data.update(copy.deepcopy(cell.plugins))
    data.setdefault("run", {})["name"] = cell.id
    return data


def wants_training(cell: Cell, settings: StudySettings) -> bool:
    if cell.recipe.train is not None:
        return cell.recipe.train
    names = cell.names()
    return settings.train and all(names.get(k) == v for k, v in settings.train_where.items())


# Raised when the way a cell is measured changes, so that a resumed study reruns cells measured
# the old way. 2: fresh compile caches per cell, profile on the benched step, kernels counted once.
MEASUREMENT_METHOD = 2


def cell_spec(cell: Cell, settings: StudySettings) -> dict[str, Any]:
    """Everything a cell's result depends on: a stored result is reused only if this is unchanged."""
    keys = ("bench_steps", "bench_warmup", "profile_active")
    return {"recipe": cell_recipe_data(cell), "train": wants_training(cell, settings), "method": MEASUREMENT_METHOD,
            **{k: getattr(settings, k) for k in keys}}


def run_cell(cell: Cell, settings: StudySettings, cell_dir: Path, registry: Registry, console: Console) -> dict[str, Any]:
    """Bench (and profile, and train if asked) one cell; return its table row. Raises on failure."""
    from recengine.bench import MEASUREMENT_KEYS, bench_recipe, measurement_warnings
    from recengine.training import release, train

    # Each phase starts from empty compile caches (see `release`): without this, the cells of a
    # study pile their graphs onto one cache and the later compiled cells silently run eagerly.
    release()
    data = cell_recipe_data(cell)
    recipe = resolve(data, registry, source=f"cell {cell.id}")
    profiler = None
    if settings.profile_active:
        # Profiled right after the timed steps, on the same compiled step, its shapes already run:
        # the profiler's default wait (1 step) is enough. The Chrome trace alone: at 430M a copy is hundreds of MB.
        profiler_data = {"name": "torch", "active": settings.profile_active, "print_summary": False, "tensorboard": False}
        profiled = resolve({**data, "profiler": profiler_data}, registry, source=f"cell {cell.id}")
        profiler = profiled.profiler.build(out_dir=cell_dir / "profile")
    bench = bench_recipe(recipe, settings.bench_steps, settings.bench_warmup, profiler=profiler)
    for line in measurement_warnings(bench):
        console.print(f"  [yellow]warning[/]: {line}")
    row = row_from_bench(bench, cell=cell.id, recipe=cell.recipe.name)  # bench records the hardware itself
    row.update({k: bench[k] for k in MEASUREMENT_KEYS if k in bench})  # shared machine? compile gave up?
    if profiler is not None:
        row["self_cpu_ms"] = bench["profile"].get("self_cpu_ms_per_step")
        row["self_cuda_ms"] = bench["profile"].get("self_cuda_ms_per_step")
    if row.get("step_ms") is not None and row.get("epoch_s") is None:
        row["epoch_s"] = bench["steps_per_epoch"] * row["step_ms"] / 1000
    if wants_training(cell, settings):
        release()
        run = RunDir(cell_dir / "run")
        resume = checkpoint.read_pointer(run.checkpoints, "latest") is not None
        if not resume and run.path.exists():
            shutil.rmtree(run.path)  # stopped before its first checkpoint: nothing to keep
        run.path.mkdir(parents=True, exist_ok=True)
        run.recipe.write_text(recipe.to_toml())
        results = train(recipe, run, resume=resume, console=console)
        row.update({k: results["test"]["model"].get(k) for k in ("hr@10", "ndcg@10")})
        run.write_json(run.path / "bench.json", row)
    return row


def _failed_row(cell: Cell, exc: BaseException) -> dict[str, Any]:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return {"cell": cell.id, **cell.names(), "status": "failed", "error": f"{type(exc).__name__}: {message}"[:500]}


def run_study(study: Study, out_dir: Path, registry: Registry, console: Console | None = None, retry_failed: bool = False,
              cell_runner: Callable[..., dict[str, Any]] = run_cell, report: bool = True) -> list[dict[str, Any]]:
    """Run every cell not already done; write the report (unless ``report`` is False); return
    all rows, done earlier or now."""
    console = console or Console(stderr=True)
    settings = study.settings.study
    cells_dir = Path(out_dir) / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        for i, cell in enumerate(study.cells, 1):
            record_path = cells_dir / f"{cell.id}.json"
            spec = cell_spec(cell, settings)
            done = json.loads(record_path.read_text()) if record_path.is_file() else None
            if done and done.get("spec") == spec and (done["row"]["status"] == "ok" or not retry_failed):
                rows.append(done["row"])
                console.print(f"[{i}/{len(study.cells)}] {cell.id}: {done['row']['status']} earlier, not rerun")
                continue
            console.print(f"[{i}/{len(study.cells)}] {cell.id}: running")
            record: dict[str, Any] = {"spec": spec}
            try:
                row = {**cell_runner(cell, settings, cells_dir / cell.id, registry, console), "status": "ok"}
                console.print(f"  ok: {row.get('samples_per_s') or 0:,.0f} samples/s, {row.get('step_ms') or 0:.1f} ms/step")
            except Exception as exc:  # a failed cell is a result too; the study goes on
                row = _failed_row(cell, exc)
                record["traceback"] = traceback.format_exc()
                console.print(f"  [red]failed[/]: {row['error']}")
            record["row"] = row
            checkpoint.atomic_write_text(record_path, json.dumps(record, indent=1))
            rows.append(row)
    finally:
        if rows and report:  # an interrupted study still leaves a table of what finished
            write_report(rows, Path(out_dir))
    return rows
