"""Shared fixtures for the reliability tests: a tiny recipe that trains in about a second."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from recengine.plugins import load_registry
from recengine.recipe import load_recipe
from recengine.runs import RunDir

# 200 users / batch 32 = 7 steps per epoch. Dropout stays on so that an exact resume
# also proves the torch RNG state is restored.
TINY_RECIPE = """
[run]
name = "tiny"
seed = 3
device = "cpu"

[dataset]
name = "synthetic"
users = 200
items = 50
mean_length = 8
seed = 1

[model]
name = "bert4rec"
hidden = 16
layers = 1
heads = 1
max_len = 10
dropout = 0.1

[train]
epochs = 3
batch_size = 32
lr = 3e-3
warmup_steps = 3
checkpoint_every_steps = 2
keep_last = 2
log_every_steps = 1

[eval]
ks = [5, 10]
batch_size = 256
"""


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


def train_tiny(folder: Path, registry, overrides: list[str]):
    """Train the tiny recipe (with ``overrides``) into ``folder/run``; return (recipe, run)."""
    from recengine.training import train

    (folder / "tiny.toml").write_text(TINY_RECIPE)
    recipe = load_recipe(folder / "tiny.toml", registry, overrides)
    run = RunDir(folder / "run")
    run.path.mkdir()
    run.recipe.write_text(recipe.to_toml())
    train(recipe, run, console=Console(file=io.StringIO()))
    return recipe, run


@pytest.fixture(scope="module")
def trained_tiny_run(tmp_path_factory, registry) -> Path:
    """A tiny run trained for one epoch (about a second), shared by a module's tests."""
    return train_tiny(tmp_path_factory.mktemp("trained"), registry, ["train.epochs=1"])[1].path


@pytest.fixture(scope="module")
def trained_two_epochs(tmp_path_factory, registry):
    """(recipe, run): 2 epochs, a checkpoint every 2 steps and at each validation."""
    return train_tiny(tmp_path_factory.mktemp("trained2"), registry, ["train.epochs=2"])
