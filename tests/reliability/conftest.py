"""Shared fixtures for the reliability tests: a tiny recipe that trains in about a second."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from recengine.plugins import load_registry
from recengine.recipe import load_recipe
from recengine.runs import RunDir

from reliability_recipe import TINY_RECIPE  # noqa: E402  (this folder is on sys.path under pytest)


@pytest.fixture(scope="session")
def registry():
    return load_registry()


@pytest.fixture
def tiny_recipe_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE)
    return path


@pytest.fixture
def tiny_recipe(tiny_recipe_path, registry):
    def make(*overrides: str):
        return load_recipe(tiny_recipe_path, registry, list(overrides))

    return make


@pytest.fixture
def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


@pytest.fixture
def new_run(tmp_path: Path):
    """A fresh run directory holding the recipe, as `recengine train` prepares it."""

    def make(recipe, name: str = "run") -> RunDir:
        run = RunDir(tmp_path / name)
        run.path.mkdir(parents=True)
        run.recipe.write_text(recipe.to_toml())
        return run

    return make


@pytest.fixture(scope="module")
def trained_tiny_run(tmp_path_factory, registry) -> Path:
    """A tiny run trained for one epoch (about a second), shared by a module's tests."""
    from recengine.training import train

    folder = tmp_path_factory.mktemp("trained")
    (folder / "tiny.toml").write_text(TINY_RECIPE)
    recipe = load_recipe(folder / "tiny.toml", registry, ["train.epochs=1"])
    run = RunDir(folder / "run")
    run.path.mkdir()
    run.recipe.write_text(recipe.to_toml())
    train(recipe, run, console=Console(file=io.StringIO()))
    return run.path
