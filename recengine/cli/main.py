"""The `recengine` command. Each command lives in its own small module."""

from __future__ import annotations

import typer

from recengine.cli import data, evaluate, plugins, recipes, recommend, train

app = typer.Typer(
    help="Train, evaluate and serve transformer sequential recommenders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command(epilog=train.EXAMPLES)(train.train)
app.command(epilog="Example: recengine evaluate runs/quickstart-demo --split test")(evaluate.evaluate)
app.command(epilog="Example: recengine recommend runs/quickstart-demo --history 12,7,99 -k 10")(recommend.recommend)
app.add_typer(recipes.app, name="recipes")
app.add_typer(plugins.app, name="plugins")
app.add_typer(data.app, name="data")


def main() -> None:
    app()
