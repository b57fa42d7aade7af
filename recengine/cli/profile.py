"""`recengine profile`: profile a few training steps of a recipe, without a full training run."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Optional

import typer

from recengine.cli._common import console, user_errors
from recengine.plugins import load_registry
from recengine.profiling import profile_recipe
from recengine.recipe import load_recipe, read_toml

EXAMPLES = """Examples:

  recengine profile recipes/quickstart.toml

  recengine profile recipes/quickstart.toml --steps 5 precision.name=amp

  recengine profile recipes/quickstart.toml --profiler memory --out runs/mem     # needs CUDA
"""


@user_errors
def profile(
    recipe: Path = typer.Argument(..., help="Recipe TOML file."),
    overrides: Optional[list[str]] = typer.Argument(None, help="section.key=value overrides, e.g. model.layers=4."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Steps recorded (the profiler's `active`; default: the recipe's or 3)."),
    profiler: Optional[str] = typer.Option(None, "--profiler", help="'torch' or 'memory' (default: the recipe's profiler, else torch)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Trace directory (default: <run.output_dir>/<run.name>-profile-<time>)."),
) -> None:
    """Run a profiler over a few training steps and print its summary (top operators, step time, memory)."""
    registry = load_registry()
    current = read_toml(recipe).get("profiler", {}).get("name", "none")
    chosen = profiler or (current if current != "none" else "torch")
    # Choose the profiler first (a different one replaces the whole section), then the
    # user's overrides (profiler.wait=0 ...), then --steps.
    section = [f"profiler.name={chosen}"] if chosen == current else [f'profiler={{name="{chosen}"}}']
    loaded = load_recipe(recipe, registry, section + list(overrides or []) + ([f"profiler.active={steps}"] if steps else []))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = out or Path(loaded.run.output_dir) / f"{loaded.run.name}-profile-{stamp}"
    result = profile_recipe(loaded, out_dir)
    console.print(f"profiled {result['steps']} steps with '{chosen}'; output in {out_dir}")
