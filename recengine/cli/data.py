"""`recengine data prepare|stats|download`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.table import Table

from recengine.cli._common import console, user_errors
from recengine.data.download import SOURCES, download as fetch_dataset
from recengine.data.loading import FileDatasetOptions, load_file_dataset
from recengine.errors import UserError
from recengine.plugins import load_registry
from recengine.recipe import load_recipe

app = typer.Typer(help="Prepare, inspect and download datasets.", no_args_is_help=True)


def _file_options(recipe: Path, overrides: list[str]) -> FileDatasetOptions:
    loaded = load_recipe(recipe, load_registry(), overrides)
    options = loaded.dataset.options
    if not isinstance(options, FileDatasetOptions):
        raise UserError(f"{recipe}: dataset '{loaded.dataset.name}' is generated, not read from a file; the data commands "
                        "need a recipe whose dataset reads one (e.g. recipes/bert4rec-ml-latest-small.toml)")
    return options


@app.command("prepare", epilog="Example: recengine data prepare recipes/bert4rec-videogames.toml")
@user_errors
def prepare(
    recipe: Path = typer.Argument(..., help="Recipe TOML file whose dataset section reads a file."),
    overrides: Optional[list[str]] = typer.Argument(None, help="section.key=value overrides, e.g. dataset.k_core=5."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Parse the file again even when a cache entry exists."),
) -> None:
    """Parse and preprocess the recipe's dataset file and store the result in the cache."""
    options = _file_options(recipe, overrides or [])
    if not options.cache_dir:
        raise UserError(f"{recipe}: dataset.cache_dir is empty, so there is no cache to build; set it to a folder")
    with console.status("reading the dataset"):
        dataset, meta = load_file_dataset(options, use_cache=not rebuild, log=console.print)
    seqs = dataset.sequences
    console.print(f"{'cache hit' if meta['cache_hit'] else 'built'}: {meta['cache']} "
                  f"({seqs.num_users:,} users, {dataset.num_items:,} items, {len(seqs.items):,} interactions)")


@app.command("stats", epilog="Example: recengine data stats recipes/bert4rec-ml-latest-small.toml")
@user_errors
def stats(
    recipe: Path = typer.Argument(..., help="Recipe TOML file whose dataset section reads a file."),
    overrides: Optional[list[str]] = typer.Argument(None, help="section.key=value overrides."),
) -> None:
    """Print users, items, interactions, sequence-length percentiles and density (builds the cache if needed)."""
    options = _file_options(recipe, overrides or [])
    with console.status("reading the dataset"):
        dataset, meta = load_file_dataset(options)
    seqs = dataset.sequences
    lengths = seqs.lengths
    # The path heads the table on a line of its own: as the title it wrapped, mid-word, to the two narrow columns' width.
    console.print(str(options.path), soft_wrap=True, markup=False, highlight=False)
    table = Table()
    table.add_column("statistic")
    table.add_column("value", justify="right")
    rows = [("users", f"{seqs.num_users:,}"), ("items", f"{dataset.num_items:,}"), ("interactions", f"{len(seqs.items):,}"),
            ("mean length", f"{lengths.mean():.2f}")]
    rows += [(f"length p{p}", f"{v:g}") for p, v in zip((0, 25, 50, 75, 90, 99, 100), np.percentile(lengths, (0, 25, 50, 75, 90, 99, 100)))]
    rows += [("density", f"{len(seqs.items) / (seqs.num_users * dataset.num_items):.6f}")]
    if meta.get("skipped_lines"):
        rows.append(("bad lines skipped", f"{meta['skipped_lines']:,}"))
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command("download", epilog="Example: recengine data download ml-1m --dir data")
@user_errors
def download(
    name: str = typer.Argument(..., help=f"Dataset to fetch: {', '.join(SOURCES)}."),
    directory: Path = typer.Option(Path("data"), "--dir", help="Folder to download and extract into."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for the server."),
) -> None:
    """Download a public dataset from its official address, verify it and extract it (resumes a partial download)."""
    path = fetch_dataset(name, directory, console=console, timeout=timeout)
    console.print(f"ready: {path}")
