"""`recengine bench`: time training steps, the data pipeline and evaluation; compare settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from recengine import bench as engine
from recengine.training import release, resolve_device
from recengine.checkpoint import atomic_write_text
from recengine.cli._common import console, err_console, user_errors
from recengine.errors import UserError
from recengine.plugins import load_registry
from recengine.recipe import load_recipe

EXAMPLES = """Examples:

  recengine bench recipes/quickstart.toml --steps 10

  recengine bench recipes/quickstart.toml --shape electronics-130m run.device=cuda --matrix precision=fp32,amp compiler=eager,torch-compile --json bench.json

Extra KEY=V1,V2 arguments without a dot are further --matrix axes; section.key=value arguments are recipe overrides.
"""


@user_errors
def bench(
    recipe: Path = typer.Argument(..., help="Recipe TOML file."),
    extra: Optional[list[str]] = typer.Argument(None, help="section.key=value overrides, or more matrix axes (plugin=a,b)."),
    shape: Optional[str] = typer.Option(None, "--shape", help=f"Synthetic data and model of a named shape: {', '.join(engine.SHAPES)}."),
    matrix: Optional[list[str]] = typer.Option(None, "--matrix", help="An axis to compare, e.g. precision=fp32,amp (repeatable)."),
    steps: int = typer.Option(20, "--steps", min=0, help="Timed training steps (the median is reported; 0: skip the step benchmark)."),
    warmup: int = typer.Option(5, "--warmup", min=0, help="Untimed steps first (compilation happens here)."),
    users: Optional[int] = typer.Option(None, "--users", min=10, help="Users of the --shape data (default: the shape's, 730,000 for Electronics)."),
    eval_users: int = typer.Option(4096, "--eval-users", min=-1, help="Test users to evaluate (0: skip evaluation, -1: all)."),
    data_batches: int = typer.Option(50, "--data-batches", min=0, help="Batches for the data-pipeline-only timing (0: skip)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every result to this JSON file (rewritten after each setting)."),
) -> None:
    """Median samples/s, step time, peak memory, FLOPs/MFU, data-pipeline throughput and evaluation users/s."""
    extra = list(extra or [])
    axes = list(matrix or []) + [a for a in extra if "." not in a.partition("=")[0]]
    overrides = [a for a in extra if "." in a.partition("=")[0]]
    registry = load_registry()
    base = load_recipe(recipe, registry)  # overrides come last, after --shape and the matrix's plugin choices
    if shape is not None:
        if shape not in engine.SHAPES:
            raise UserError(f"--shape '{shape}': unknown; choose one of {', '.join(engine.SHAPES)}")
        base = engine.shape_recipe(base, engine.SHAPES[shape], registry)
    # Every setting resolved before anything runs: a typo in the last value fails now, not after the others.
    settings = [(setting, engine.matrix_recipe(base, setting, registry, overrides)) for setting in engine.parse_matrix(axes)]
    for _, chosen in settings:  # and every device: no CUDA fails now, not after --shape's data and the settings before it
        resolve_device(chosen.run.device)
    dataset = engine.shape_dataset(engine.SHAPES[shape], users, seed=base.run.seed) if shape is not None else None
    results: list[dict[str, Any]] = []
    for setting, chosen in settings:
        label = ", ".join(f"{k}={v}" for k, v in setting.items()) or "recipe"
        err_console.print(f"bench {label} ...")
        row = engine.bench_recipe(chosen, steps=steps, warmup=warmup, dataset=dataset,
                                  eval_users=None if eval_users == -1 else eval_users, data_batches=data_batches)
        row.update({"setting": label, "shape": shape})
        for line in engine.measurement_warnings(row):
            err_console.print(f"[yellow]warning[/]: {line}")
        results.append(row)
        release()
        if json_out is not None:  # after every setting, so a long matrix that is cut short keeps what it measured
            json_out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(json_out, json.dumps(results, indent=2))
    out = console if console.is_terminal else Console(width=150)  # a log file gets every column
    out.print(results_table(results))
    if json_out is not None:
        console.print(f"results written to {json_out}")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def results_table(results: list[dict[str, Any]]) -> Table:
    first = results[0]
    table = Table(title_justify="left", title=f"recengine bench: {first['recipe']} on {first['device']} (torch {first['torch']})")
    for name in ("setting", "samples/s", "mean samples/s", "step ms", "peak MB", "TFLOP/step", "MFU", "optim floor ms", "data samples/s", "eval users/s"):
        table.add_column(name, justify="left" if name == "setting" else "right")
    for r in results:
        flops, mfu = r.get("flops_per_step"), r.get("mfu")
        table.add_row(
            r["setting"], _fmt(r.get("samples_per_s"), ",.0f"), _fmt(r.get("samples_per_s_mean"), ",.0f"), _fmt(r.get("step_ms"), ".2f"), _fmt(r.get("peak_memory_mb"), ",.0f"),
            _fmt(flops and flops / 1e12, ".3f"), _fmt(mfu and 100 * mfu, ".1f") + ("%" if mfu else ""),
            _fmt(r.get("optimizer_floor_ms"), ".2f"), _fmt(r.get("data_samples_per_s"), ",.0f"), _fmt(r.get("eval_users_per_s"), ",.0f"),
        )
    return table
