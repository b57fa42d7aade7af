"""The accuracy recipes validate, apart from their dataset section (its plugin lands with the data issue)."""

import tomllib
from pathlib import Path

import pytest

from recengine.plugins import load_registry
from recengine.recipe import resolve

RECIPES = ["bert4rec-videogames", "bert4rec-ml-latest-small", "amazon-sparse-bert4rec", "amazon-sparse-sasrec"]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_validates_with_a_stand_in_dataset(name):
    path = Path(__file__).parent.parent / "recipes" / f"{name}.toml"
    data = tomllib.loads(path.read_text())
    assert data["dataset"]["path"].startswith("../shared/data/")
    data["dataset"] = {"name": "synthetic"}
    recipe = resolve(data, load_registry(), str(path))
    assert recipe.eval.metric == "ndcg@10"
