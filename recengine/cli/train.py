"""`recengine train`: train a recipe, or resume a run."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Optional

import typer

from recengine.cli._common import console, err_console, metrics_table, user_errors
from recengine.errors import UserError
from recengine.inference import load_run_recipe
from recengine.plugins import load_registry
from recengine.recipe import load_recipe
from recengine.runs import RunDir
from recengine.training import train as run_training

EXAMPLES = """Examples:

  recengine train recipes/quickstart.toml

  recengine train recipes/quickstart.toml train.lr=3e-4 model.layers=2 --name my-run

  recengine train --resume runs/my-run
"""


@user_errors
def train(
    recipe: Optional[Path] = typer.Argument(None, help="Recipe TOML file (omit with --resume)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="section.key=value overrides, e.g. train.lr=3e-4."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory from its latest checkpoint."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Parent of the run directory (default: run.output_dir)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run directory name (default: <run.name>-<time>)."),
) -> None:
    """Train a model described by a recipe; print validation and test metrics beside the popularity baseline."""
    overrides = list(overrides or [])
    registry = load_registry()
    if resume is not None:
        if recipe is not None:  # `train --resume RUN a.b=c`: the first override lands in RECIPE
            overrides.insert(0, str(recipe))
        run = RunDir.open(resume)
        loaded = load_run_recipe(run, registry, overrides)
    else:
        if recipe is None:
            raise UserError("give a recipe (recengine train recipes/quickstart.toml) or --resume RUN_DIR")
        loaded = load_recipe(recipe, registry, overrides)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        run = RunDir((output_dir or Path(loaded.run.output_dir)) / (name or f"{loaded.run.name}-{stamp}"))
        if run.path.exists() and any(run.path.iterdir()):
            raise UserError(f"{run.path}: run directory already exists; resume it with --resume {run.path} or pick another --name")
        run.path.mkdir(parents=True, exist_ok=True)
        run.recipe.write_text(loaded.to_toml())
    results = run_training(loaded, run, resume=resume is not None, console=err_console)
    console.print(metrics_table(results, ["valid", "test"], loaded.eval.ks))
    console.print(f"best epoch {results['best_epoch']} of {results['epochs_run']}; run saved in {run.path}")
