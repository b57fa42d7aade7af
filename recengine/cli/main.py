"""The `recengine` command. Each command lives in its own small module."""

from __future__ import annotations

import typer

from recengine.cli import bench, data, evaluate, export, plugins, profile, recipes, recommend, report, study, tensorboard, train, tune

app = typer.Typer(
    help="Train, evaluate and serve transformer sequential recommenders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command(epilog=train.EXAMPLES)(train.train)
app.command(epilog="Example: recengine evaluate runs/quickstart-demo --split test")(evaluate.evaluate)
app.command(epilog=recommend.EXAMPLES)(recommend.recommend)
app.command(epilog=export.EXAMPLES)(export.export)
app.command(epilog=bench.EXAMPLES)(bench.bench)
app.command(epilog=profile.EXAMPLES)(profile.profile)
app.command(epilog=study.EXAMPLES)(study.study)
app.command(epilog=report.EXAMPLES)(report.report)
app.command(epilog=tensorboard.EXAMPLES)(tensorboard.tensorboard)
app.command(epilog=tune.EXAMPLES)(tune.tune)


@app.callback(invoke_without_command=True)
def _version(version: bool = typer.Option(False, "--version", help="Print the recengine and torch versions and exit.",
                                          is_eager=True)) -> None:
    if version:
        import torch

        import recengine

        typer.echo(f"recengine {recengine.__version__} (torch {torch.__version__})")
        raise typer.Exit()


app.add_typer(recipes.app, name="recipes")
app.add_typer(plugins.app, name="plugins")
app.add_typer(data.app, name="data")


def main() -> None:
    app()
