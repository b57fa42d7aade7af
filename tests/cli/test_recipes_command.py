"""`recengine recipes list|show|validate` from a user's side."""

import tomllib
from pathlib import Path

from typer.testing import CliRunner

from recengine.cli.main import app

runner = CliRunner()
QUICKSTART = Path(__file__).parents[2] / "recipes" / "quickstart.toml"


def test_validate_checks_every_file_and_fails_if_any_fails(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nepochs = "many"\n')
    result = runner.invoke(app, ["recipes", "validate", str(tmp_path / "missing.toml"), str(QUICKSTART), str(bad)])
    assert result.exit_code == 1
    assert "missing.toml" in result.output and f"{QUICKSTART}: ok" in result.output and "train.epochs" in result.output
    assert "2 of 3 recipes have problems" in result.output
    assert "Traceback" not in result.output


def test_validate_says_an_overrides_own_mistake_once_not_once_per_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nepochs = "many"\n')
    result = runner.invoke(app, ["recipes", "validate", str(QUICKSTART), str(QUICKSTART), str(bad), "--set", "train.bogus=1"])
    assert result.exit_code == 1
    assert result.output.count("train.bogus: unknown key") == 1
    assert "error: override 'train.bogus=1': train.bogus: unknown key" in result.output
    assert f"{bad}: train.epochs" in result.output  # a file's own problem still names the file
    assert "3 of 3 recipes have problems" in result.output
    result = runner.invoke(app, ["recipes", "validate", str(QUICKSTART), str(QUICKSTART), "--set", "train.lr.x=1"])
    assert result.exit_code == 1 and result.output.count("'lr' is a value, not a section") == 1


def test_show_piped_is_the_exact_toml_whatever_its_line_length():
    result = runner.invoke(app, ["recipes", "show", str(QUICKSTART), "run.name=" + "x" * 150, "--catalog-size", "400"])
    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.output)["run"]["name"] == "x" * 150  # all of it TOML, not wrapped at 80 columns
    assert "# parameters: " in result.output


def test_list_of_a_missing_folder_is_an_error(tmp_path):
    result = runner.invoke(app, ["recipes", "list", "--dir", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "not a folder" in result.output


def test_list_describes_each_recipe_by_its_first_comment():
    result = runner.invoke(app, ["recipes", "list", "--dir", str(QUICKSTART.parent)])
    assert result.exit_code == 0
    first = next(line for line in QUICKSTART.read_text().splitlines() if line.startswith("#")).lstrip("# ")
    assert first.split()[0] in result.output and "quickstart.toml" in result.output  # the cell may wrap after a word
