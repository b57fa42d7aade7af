"""`recengine study`: run a study file's cells as benchmarks (and trainings), then report."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Optional

import typer

from recengine.cli._common import console, err_console, user_errors
from recengine.errors import UserError
from recengine.plugins import load_registry
from recengine.study import load_study, run_study

EXAMPLES = """Examples:

  recengine study studies/ci-tiny.toml

  recengine study studies/scaling.toml --out runs/studies/scaling-h100

  recengine study studies/scaling.toml --retry-failed      # rerun cells that failed last time

  recengine study studies/scaling.toml --list

  recengine study studies/scaling.toml --only '430m-*' --out runs/studies/gpu1   # one share of the cells, e.g. one GPU each

  recengine report runs/studies/gpu0 runs/studies/gpu1 --out runs/studies/all   # then one table from the shares
"""


@user_errors
def study(
    study_file: Path = typer.Argument(..., help="Study TOML: recipes and the precision/compiler/adapter matrix."),
    out: Optional[Path] = typer.Option(None, "--out", help="Result directory (default: <study.output_dir>/<study.name>)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Rerun cells recorded as failed (finished cells are never rerun)."),
    no_train: bool = typer.Option(False, "--no-train", help="Benchmark only: train no cell, whatever the study file says."),
    list_cells: bool = typer.Option(False, "--list", help="List the cells and exit."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Run only cells whose id matches this glob (repeatable), "
                                             "e.g. '130m-*' or '*-ilora'; see --list for the ids."),
) -> None:
    """Benchmark (and optionally train) every cell of a study; write results.csv/.json/.md and plots.

    An interrupted study resumes where it stopped when run again with the same --out."""
    loaded = load_study(study_file)
    if no_train:
        loaded.settings.study.train = False
        for recipe in loaded.settings.recipes:
            recipe.train = False
    if only and out is None and not list_cells:
        # A share's report holds only its own cells: it must not overwrite the whole study's.
        raise UserError("--only runs a share of the cells: give it its own --out directory, "
                        "then join the shares with `recengine report DIR... --out DIR`")
    if only:
        loaded.cells = [c for c in loaded.cells if any(fnmatch.fnmatchcase(c.id, pattern) for pattern in only)]
        if not loaded.cells:
            raise UserError(f"--only {' '.join(only)}: no cell of {study_file} matches; see its ids with --list")
    if list_cells:
        for cell in loaded.cells:
            console.print(cell.id)
        return
    out_dir = out or Path(loaded.settings.study.output_dir) / loaded.settings.study.name
    rows = run_study(loaded, out_dir, load_registry(), console=err_console, retry_failed=retry_failed)
    failed = [r for r in rows if r.get("status") != "ok"]
    console.print(f"{len(rows) - len(failed)} cells ok, {len(failed)} failed; table and plots in {out_dir} (results.md)")
