"""What every command shares: user-error handling, the registry and result tables."""

from __future__ import annotations

import functools
from typing import Any, Callable

import typer
from rich.console import Console
from rich.table import Table

from recengine.errors import UserError

console = Console()
err_console = Console(stderr=True)


def user_errors(fn: Callable) -> Callable:
    """A user's mistake becomes one line per problem on stderr and exit code 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            for line in str(exc).splitlines():
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def metrics_table(results: dict[str, Any], splits: list[str], ks: list[int]) -> Table:
    """Model against the popularity baseline, one column pair per split."""
    table = Table(title=f"Metrics ({results.get('protocol', 'full ranking')})")
    table.add_column("metric")
    for split in splits:
        table.add_column(f"{split} model", justify="right")
        table.add_column(f"{split} popularity", justify="right")
    names = [f"{m}@{k}" for m in ("hr", "ndcg", "recall", "coverage") for k in ks] + ["mrr"]
    names = [name for name in names if name in results[splits[0]]["model"]]  # coverage: full ranking only
    for name in names:
        row = [name.upper()]
        for split in splits:
            row += [f"{results[split]['model'][name]:.4f}", f"{results[split]['popularity'][name]:.4f}"]
        table.add_row(*row)
    return table
