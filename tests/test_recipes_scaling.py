"""The scaling-study recipes have the parameter counts their names say; every bundled recipe validates."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recengine.cli.main import app
from recengine.plugins import load_registry
from recengine.recipe import load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
# name -> (target parameters, catalog size the study's name assumes)
SCALING = {"bert4rec-5m-ml20m": (5e6, 18_345), "bert4rec-85m-electronics": (85e6, 160_054),
           "bert4rec-130m-electronics": (130e6, 160_054), "bert4rec-430m-electronics": (430e6, 160_054)}


@pytest.mark.parametrize("name", list(SCALING))
def test_parameter_count_within_5_percent_of_the_name(name):
    target, catalog = SCALING[name]
    result = CliRunner().invoke(app, ["recipes", "show", str(RECIPES / f"{name}.toml"), "--catalog-size", str(catalog)])
    assert result.exit_code == 0, result.output
    count = int(re.search(r"parameters: ([\d,]+)", result.output).group(1).replace(",", ""))
    assert abs(count - target) / target < 0.05, count


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.name)
def test_every_recipe_validates(path):
    load_recipe(path, load_registry())
