"""`recengine tune` on the command line: the happy path, user errors, and no Optuna installed."""

import sys
from pathlib import Path

import pytest

import recengine
from typer.testing import CliRunner

from recengine.cli.main import app
from recengine.cli.tune import INSTALL
from recengine.recipe import load_recipe
from recengine.plugins import load_registry

DATA = Path(__file__).parent.parent / "data"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["tune", *map(str, args)])


def test_without_optuna_prints_the_install_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "recengine.tune", raising=False)
    monkeypatch.delattr(recengine, "tune", raising=False)  # else `from recengine import tune` finds the loaded module
    result = invoke(DATA / "tune-tiny.toml", "--space", DATA / "tune-space.toml", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {INSTALL}"
    assert "pip install 'recengine[tune]'" in INSTALL
    assert not (tmp_path / "out").exists()


def test_bad_space_is_one_line_per_problem_before_any_trial(tmp_path):
    pytest.importorskip("optuna")
    space = tmp_path / "space.toml"
    space.write_text('model.dropout = { type = "float", low = 0.0, high = 1.5 }\n'
                     'train.lrr = { type = "float", low = 1e-4, high = 1e-3 }\n')
    result = invoke(DATA / "tune-tiny.toml", "--space", space, "--out", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"error: {space}: model.dropout: the recipe rejects 1.5")
    assert lines[1].startswith(f"error: {space}: train.lrr: not a key of this recipe")
    assert not (tmp_path / "out" / "trials").exists()


def test_bad_options_are_user_errors(tmp_path):
    pytest.importorskip("optuna")
    base = [DATA / "tune-tiny.toml", "--space", DATA / "tune-space.toml", "--out", tmp_path / "out"]
    for extra, words in [(["--pruner", "hyperband"], "--pruner hyperband: choose"),
                         (["--metric", "ndcg@20"], "--metric ndcg@20: not computed"),
                         (["--storage", "nosuchdb://x"], "--storage nosuchdb://x: cannot open")]:
        result = invoke(*base, *extra)
        assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output, result.output
    assert invoke(tmp_path / "absent.toml", "--space", DATA / "tune-space.toml").exit_code == 1


@pytest.mark.slow
def test_tune_command_end_to_end(tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "out"
    result = invoke(DATA / "tune-tiny.toml", "train.epochs=1", "--space", DATA / "tune-space.toml", "--trials", 2,
                    "--out", out, "--storage", f"sqlite:///{tmp_path / 'tune.db'}", "--study-name", "cli", "--pruner", "none")
    assert result.exit_code == 0, result.output
    assert "trial 0 (1/2): valid ndcg@10" in result.output and "trial 1 (2/2)" in result.output
    assert f"recipe written to {out / 'best.toml'}" in result.output
    assert (tmp_path / "tune.db").is_file() and not (out / "study.db").exists()
    recipe = load_recipe(out / "best.toml", load_registry())
    assert recipe.train.epochs == 1  # the override is part of the base recipe
    assert sorted(p.name for p in out.iterdir()) == ["best.toml", "history.png", "importance.png", "trials", "trials.csv", "trials.md"]
