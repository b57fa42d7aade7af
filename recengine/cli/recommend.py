"""`recengine recommend`: top-k items for a history of original item ids."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from recengine.cli._common import console, user_errors
from recengine.inference import load


@user_errors
def recommend(
    run_dir: Path = typer.Argument(..., help="A run directory made by `recengine train`."),
    history: str = typer.Option(..., "--history", help="Comma-separated original item ids, oldest first."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="How many items to recommend."),
    include_history: bool = typer.Option(False, "--include-history", help="Allow items already in the history."),
) -> None:
    """Recommend the top-k next items for one user history."""
    items = [h.strip() for h in history.split(",") if h.strip()]
    recommender = load(run_dir)
    (recs,) = recommender.recommend([items], k=k, exclude_history=not include_history)
    table = Table(title=f"Top {k} for history {','.join(items)}")
    table.add_column("rank", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    for rank, (item, score) in enumerate(recs, 1):
        table.add_row(str(rank), item, f"{score:.4f}")
    console.print(table)
