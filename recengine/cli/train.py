"""`recengine train`: train a recipe, or resume a run."""

from __future__ import annotations

import datetime
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from recengine.cli._common import console, err_console, metrics_table, user_errors
from recengine.errors import UserError
from recengine.inference import load_run_recipe
from recengine.plugins import load_registry
from recengine.checkpoint import atomic_write_text
from recengine.recipe import load_recipe
from recengine.runs import RunDir
from recengine.training import train as run_training

EXAMPLES = """Examples:

  recengine train recipes/quickstart.toml

  recengine train recipes/quickstart.toml train.lr=3e-4 model.layers=2 --name my-run

  recengine train --resume runs/my-run

  recengine train recipes/quickstart.toml --nproc 2      # = torchrun --standalone --nproc_per_node=2 -m recengine train ...
"""


@user_errors
def train(
    recipe: Optional[Path] = typer.Argument(None, help="Recipe TOML file (omit with --resume)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="section.key=value overrides, e.g. train.lr=3e-4."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory from its latest checkpoint."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Parent of the run directory (default: run.output_dir)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run directory name (default: <run.name>-<time>)."),
    nproc: int = typer.Option(0, "--nproc", min=0, help="Data-parallel processes on this machine, launched with torchrun "
                              "(0: this process alone; the recipe's distributed.strategy picks DDP or FSDP2)."),
) -> None:
    """Train a model described by a recipe; print validation and test metrics beside the popularity baseline."""
    overrides = list(overrides or [])
    if resume is not None and recipe is not None:
        # `train --resume RUN a.b=c` puts the first override in RECIPE; a recipe file there is a mistake.
        key = str(recipe).partition("=")[0]
        if recipe.is_file() or ("=" not in str(recipe) or "/" in key) and recipe.suffix == ".toml":
            raise UserError(f"--resume continues {resume} with the recipe saved in it; drop {recipe} "
                            "(overrides such as train.epochs=30 may follow)")
        overrides.insert(0, str(recipe))
        recipe = None
    registry = load_registry()
    if nproc:  # the recipe and run directory are checked here first: a mistake is said once, not once per process
        if resume is not None:
            load_run_recipe(RunDir.open(resume), registry, overrides)
        else:
            _, run = new_run(recipe, registry, overrides, output_dir, name, example="--nproc 2")
            refuse_existing(run)
            name = run.path.name  # chosen once, for every rank
        launch_torchrun(nproc, recipe, overrides, resume, output_dir, name)
    if resume is not None:
        run = RunDir.open(resume)
        loaded = load_run_recipe(run, registry, overrides)
    else:
        loaded, run = new_run(recipe, registry, overrides, output_dir, name)
        if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 creates the run directory, the others join it
            wait_for(run.recipe)
        else:
            refuse_existing(run)
            run.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run.recipe, loaded.to_toml())
    if os.environ.get("RANK", "0") != "0":
        run_training(loaded, run, resume=resume is not None, console=err_console)
        leave_torchrun_worker()
    results = run_training(loaded, run, resume=resume is not None, console=err_console)
    console.print(metrics_table(results, ["valid", "test"], loaded.eval.ks))
    console.print(f"best epoch {results['best_epoch']} of {results['epochs_run']}; run saved in {run.path}")
    if "WORLD_SIZE" in os.environ:
        leave_torchrun_worker()


def new_run(recipe, registry, overrides: list[str], output_dir, name, example: str = ""):
    """The loaded recipe and its run directory: OUTPUT_DIR/NAME, by default run.output_dir/<run.name>-<time>."""
    if recipe is None:
        raise UserError(f"give a recipe (recengine train recipes/quickstart.toml{' ' + example if example else ''}) or --resume RUN_DIR")
    loaded = load_recipe(recipe, registry, overrides)
    name = name or f"{loaded.run.name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    return loaded, RunDir((output_dir or Path(loaded.run.output_dir)) / name)


def refuse_existing(run: RunDir) -> None:
    if run.path.exists() and any(run.path.iterdir()):
        raise UserError(f"{run.path}: run directory already exists; resume it with --resume {run.path} or pick another --name")


def leave_torchrun_worker() -> None:
    """End a torchrun worker whose run is finished and written, skipping interpreter teardown.

    On CPU (gloo) a rank that had finished everything, process group destroyed, sometimes aborted
    during teardown ("terminate called without an active exception", SIGABRT: gloo's worker
    threads can hold work whose tensors outlive the interpreter; pytorch PR 179291), and torchrun
    then reported the finished run as failed. Checkpoints, metrics and results are written and
    TensorBoard closed by then; only the streams need flushing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch_torchrun(nproc: int, recipe, overrides: list[str], resume, output_dir, name) -> None:
    """Replace this process by ``torchrun --standalone --nproc_per_node=N -m recengine train ...``.

    Every rank must agree on the run directory, so a new run's ``name`` is chosen before, once."""
    if "WORLD_SIZE" in os.environ:
        raise UserError("--nproc given inside a torchrun job; launch either with torchrun or with --nproc, not both")
    args = [str(recipe)] if recipe is not None else []
    args += overrides
    if resume is not None:
        args += ["--resume", str(resume)]
    else:
        args += ["--name", name]
    if output_dir is not None:
        args += ["--output-dir", str(output_dir)]
    torchrun = [sys.executable, "-m", "recengine.cli.torchrun", "--standalone", f"--nproc_per_node={nproc}"]
    os.execv(sys.executable, torchrun + ["-m", "recengine", "train", *args])


def wait_for(path: Path, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.is_file():
        if time.monotonic() > deadline:
            raise UserError(f"{path}: rank 0 did not create the run directory within {timeout_s:.0f} s; see its error above")
        time.sleep(0.2)
