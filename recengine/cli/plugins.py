"""`recengine plugins list`."""

from __future__ import annotations

import typer
from rich.table import Table

from recengine.cli._common import console, err_console, user_errors
from recengine.plugins import load_registry

app = typer.Typer(help="Inspect installed plugins.", no_args_is_help=True)


@app.command("list", epilog="Example: RECENGINE_DISABLE_PLUGINS=tensorboard recengine plugins list")
@user_errors
def list_plugins() -> None:
    """Every plugin found through the `recengine` entry-point group, with what it registers."""
    registry = load_registry()
    table = Table(title="recengine plugins")
    for column in ("plugin", "distribution", "registers"):
        table.add_column(column)
    for plugin, dist in sorted(registry.plugins.items()):
        registered = [f"{kind} '{name}'" for kind, entries in registry.entries.items() for name, e in entries.items() if e.plugin == plugin]
        table.add_row(plugin, dist, ", ".join(registered) or "(nothing)")
    console.print(table)
    for plugin, error in registry.broken.items():
        err_console.print(f"[red]disabled[/] {plugin}: {error}")
