"""The scaling-study recipes have the parameter counts their names say; every bundled recipe validates."""

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from recengine.cli.main import app
from recengine.model import count_parameters
from recengine.plugins import load_registry
from recengine.recipe import load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
# name -> (target parameters, catalog size the study's name assumes)
SCALING = {"bert4rec-5m-ml20m": (5e6, 18_345), "bert4rec-85m-electronics": (85e6, 160_054),
           "bert4rec-130m-electronics": (130e6, 160_054), "bert4rec-430m-electronics": (430e6, 160_054)}


@pytest.mark.parametrize("name", list(SCALING))
def test_parameter_count_within_5_percent_of_the_name(name):
    target, catalog = SCALING[name]
    recipe = load_recipe(RECIPES / f"{name}.toml", load_registry())
    with torch.device("meta"):  # shapes only: a 430M-parameter model without allocating 1.7 GB
        count = count_parameters(recipe.model.build(num_items=catalog))
    assert abs(count - target) / target < 0.05, count


def test_recipes_show_prints_the_count():
    result = CliRunner().invoke(app, ["recipes", "show", str(RECIPES / "bert4rec-5m-ml20m.toml"), "--catalog-size", "18345"])
    assert result.exit_code == 0, result.output
    count = int(re.search(r"parameters: ([\d,]+)", result.output).group(1).replace(",", ""))
    assert abs(count - 5e6) / 5e6 < 0.05, count


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.name)
def test_every_recipe_validates(path):
    load_recipe(path, load_registry())
