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
from recengine.recipe import apply_overrides, load_recipe, parse_override, read_toml, resolve

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
    keys = {".".join(parse_override(text)[0]): text for text in overrides}  # a malformed override fails here, once
    registry = load_registry()
    problems: dict[Path, list[str]] = {}
    read: list[Path] = []  # the files the overrides were applied to
    for path in recipes:  # every file is checked, whatever the ones before it held
        try:
            data = read_toml(path)
            read.append(path)
            resolve(apply_overrides(data, overrides), registry, source=str(path))
        except UserError as exc:
            problems[path] = str(exc).splitlines()
    shared = override_problems(problems, read, keys) if len(read) > 1 else {}
    for line in shared.values():
        typer.echo(f"error: {line}", err=True)
    for path in recipes:
        if path not in problems:
            console.print(f"{path}: ok")
        for line in problems.get(path, []):
            if line.removeprefix(f"{path}: ") not in shared:
                typer.echo(f"error: {line}", err=True)
    if problems:
        if len(recipes) > 1:  # one recipe: its own lines say it all
            typer.echo(f"{sum(path in problems for path in recipes)} of {len(recipes)} recipes have problems", err=True)
        raise typer.Exit(1)


def override_problems(problems: dict[Path, list[str]], read: list[Path], keys: dict[str, str]) -> dict[str, str]:
    """The problems an override itself causes (an unknown key, a bad value): the same line, at the override's key,
    in every recipe read. Each is said once rather than once per file: message without the file -> line to print."""
    messages = [[line.removeprefix(f"{path}: ") for line in problems.get(path, [])] for path in read]
    shared = {}
    for message in messages[0]:
        if not all(message in other for other in messages[1:]):
            continue  # this recipe's own problem, or the override's in some recipes only: said per file
        loc = message.partition(": ")[0]
        text = next((t for key, t in keys.items() if loc == key or loc.startswith(key + ".")), None)
        if message.startswith("override '"):  # apply_overrides' lines name the override already
            shared[message] = message
        elif text is not None:
            shared[message] = f"override '{text}': {message}"
    return shared
