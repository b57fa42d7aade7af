"""`recengine recipes list|show|validate`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer
from rich.syntax import Syntax
from rich.table import Table

from recengine.cli._common import console, user_errors
from recengine.errors import UserError
from recengine.model import count_parameters
from recengine.plugins import load_registry
from recengine.recipe import load_recipe, read_toml

app = typer.Typer(help="List, show and validate recipes.", no_args_is_help=True)


@app.command("list", epilog="Example: recengine recipes list --dir recipes")
@user_errors
def list_recipes(directory: Path = typer.Option(Path("recipes"), "--dir", help="Folder of recipe TOML files.")) -> None:
    """List the recipes in a folder with their dataset and model."""
    if not directory.is_dir():
        raise UserError(f"--dir {directory}: not a folder; give the folder that holds the recipe TOML files")
    table = Table(title=f"Recipes in {directory}")
    for column in ("recipe", "dataset", "model", "description"):
        table.add_column(column)
    for path in sorted(directory.glob("*.toml")):
        data = read_toml(path)
        table.add_row(path.name, data.get("dataset", {}).get("name", "?"), data.get("model", {}).get("name", "?"),
                      first_comment(path) or data.get("run", {}).get("name", ""))
    console.print(table)


def first_comment(path: Path) -> str:
    """A recipe's description: its first comment line (recipes open with one)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            return ""  # only the comment block the file opens with describes it
        if line.strip("# "):
            return line.lstrip("#").strip()
    return ""


@app.command("show", epilog="Example: recengine recipes show recipes/quickstart.toml model.layers=4 --catalog-size 160054")
@user_errors
def show(
    recipe: Path = typer.Argument(..., help="Recipe TOML file."),
    overrides: Optional[list[str]] = typer.Argument(None, help="section.key=value overrides."),
    catalog_size: Optional[int] = typer.Option(None, "--catalog-size", min=1, help="Count parameters for this many items instead of loading the data."),
) -> None:
    """Print the resolved recipe (every default filled in) and the model's exact parameter count."""
    loaded = load_recipe(recipe, load_registry(), overrides or [])
    num_items = catalog_size or loaded.dataset.build().num_items
    with torch.device("meta"):  # shapes only: counting 430M parameters needs no memory and no init
        model = loaded.model.build(num_items=num_items)
    count = f"parameters: {count_parameters(model):,} at a catalog of {num_items:,} items"
    if console.is_terminal:
        console.print(Syntax(loaded.to_toml(), "toml"))
        console.print(count)
    else:  # piped or redirected: exactly the TOML, never wrapped at the console's width, the count as a comment
        typer.echo(loaded.to_toml().rstrip("\n") + f"\n\n# {count}")


@app.command("validate", epilog="Example: recengine recipes validate recipes/*.toml")
@user_errors
def validate(recipes: list[Path] = typer.Argument(..., help="Recipe TOML files."),
             overrides: list[str] = typer.Option([], "--set", help="section.key=value override (repeatable).")) -> None:
    """Check recipes against the installed plugins; every problem is listed, one per line."""
    registry = load_registry()
    failed = 0
    for path in recipes:  # every file is checked, whatever the ones before it held
        try:
            load_recipe(path, registry, overrides)
        except UserError as exc:
            failed += 1
            for line in str(exc).splitlines():
                typer.echo(f"error: {line}", err=True)
        else:
            console.print(f"{path}: ok")
    if failed:
        if len(recipes) > 1:  # one recipe: its own lines say it all
            typer.echo(f"{failed} of {len(recipes)} recipes have problems", err=True)
        raise typer.Exit(1)
