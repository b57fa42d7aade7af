"""A tiny train -> evaluate -> recommend run through the CLI, and its error paths."""

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from recengine.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import TINY_RECIPE

    root = tmp_path_factory.mktemp("cli")
    recipe = root / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    result = runner.invoke(app, ["train", str(recipe), "train.epochs=2", "--output-dir", str(root), "--name", "run"])
    assert result.exit_code == 0, result.output
    return root, recipe, root / "run", result.output


def test_train_prints_metrics_beside_popularity(trained):
    _, _, run, output = trained
    assert "valid popularity" in output and "test model" in output and "NDCG@10" in output
    assert (run / "recipe.toml").exists() and (run / "results.json").exists()


def test_evaluate(trained):
    _, _, run, _ = trained
    result = runner.invoke(app, ["evaluate", str(run), "--split", "valid"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "results.json").read_text())["valid"]["model"]["ndcg@10"]
    assert f"{saved:.4f}" in result.output


def test_recommend(trained):
    _, _, run, _ = trained
    result = runner.invoke(app, ["recommend", str(run), "--history", "3,7,1", "-k", "5"])
    assert result.exit_code == 0, result.output
    ranks = re.findall(r"│\s+(\d+) │ (\d+)\s+│", result.output)
    assert [r for r, _ in ranks] == ["1", "2", "3", "4", "5"]
    assert not {"3", "7", "1"} & {item for _, item in ranks}  # history excluded


@pytest.mark.parametrize("args, message", [
    (["--device", "gpu"], "--device: 'gpu' is not a device recengine runs on; choose auto, cpu, cuda or cuda:N"),
    (["--device", "meta"], "--device: 'meta' is not a device recengine runs on"),
    (["--output", "recs.jsonl"], "with --history they are printed: drop --output"),
])
def test_recommend_mistakes_get_one_line_naming_the_flag(trained, args, message):
    _, _, run, _ = trained
    result = runner.invoke(app, ["recommend", str(run), "--history", "3,7,1", *args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where no GPU is present")
def test_recommend_on_cuda_without_a_gpu_names_the_flag_to_use(trained):
    _, _, run, _ = trained
    result = runner.invoke(app, ["recommend", str(run), "--history", "3,7,1", "--device", "cuda"])
    assert result.exit_code == 1 and "use --device cpu" in result.output


def test_resume_a_finished_run_is_a_no_op_that_reports(trained):
    _, _, run, _ = trained
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "NDCG@10" in result.output


def _one_error(result, pattern):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.output


def test_resume_with_a_recipe_says_to_drop_it(trained):
    _, recipe, run, _ = trained
    for nproc in ([], ["--nproc", "2"]):  # refused before any torchrun is launched
        result = runner.invoke(app, ["train", str(recipe), "--resume", str(run), *nproc])
        assert result.exit_code == 1 and f"drop {recipe}" in result.output, result.output
    # an override whose value ends in .toml is still an override (a missing key of this recipe here)
    result = runner.invoke(app, ["train", "dataset.path=x.toml", "--resume", str(run)])
    assert "drop" not in result.output and "dataset.path" in result.output


def test_unknown_item_in_history(trained):
    _, _, run, _ = trained
    _one_error(runner.invoke(app, ["recommend", str(run), "--history", "3,999,abc"]), r"^error: --history: unknown item id\(s\) 999, abc")


def test_missing_run_directory(tmp_path):
    _one_error(runner.invoke(app, ["evaluate", str(tmp_path / "nope")]), r"run directory not found")
    _one_error(runner.invoke(app, ["recommend", str(tmp_path / "nope"), "--history", "1"]), r"run directory not found")


def test_checkpoint_from_a_different_model_shape(trained):
    _, _, run, _ = trained
    recipe = run / "recipe.toml"
    original = recipe.read_text()
    try:
        recipe.write_text(original.replace("hidden = 16", "hidden = 32"))
        _one_error(runner.invoke(app, ["evaluate", str(run)]), r"has shape \[.*\] but the recipe's model has \[.*\]: the checkpoint comes from a different model shape")
    finally:
        recipe.write_text(original)


def test_existing_run_directory_is_not_overwritten(trained):
    root, recipe, _, _ = trained
    _one_error(runner.invoke(app, ["train", str(recipe), "--output-dir", str(root), "--name", "run"]), r"already exists; resume it with --resume")


def test_bad_recipe_lists_every_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[dataset]\nname = "synthetic"\nusers = -1\n[model]\nname = "bert4rec"\nlayerz = 2\n')
    result = runner.invoke(app, ["recipes", "validate", str(bad)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"error: {bad}: dataset.users: Input should be greater than or equal to 1" in result.output
    assert f"error: {bad}: model.layerz: unknown key" in result.output


def test_missing_and_malformed_recipe(tmp_path):
    _one_error(runner.invoke(app, ["train", str(tmp_path / "none.toml")]), r"recipe not found")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[[")
    _one_error(runner.invoke(app, ["train", str(bad)]), r"not valid TOML")


def test_every_command_help_has_an_example():
    for args in (["train"], ["evaluate"], ["recommend"], ["recipes", "list"], ["recipes", "show"], ["recipes", "validate"], ["plugins", "list"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0 and "xample" in result.output, args


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("recengine ") and f"torch {torch.__version__}" in result.output


def test_plugins_list_shows_distributions():
    result = runner.invoke(app, ["plugins", "list"])
    assert result.exit_code == 0
    assert re.search(r"bert4rec\s+│ recengine\s+│ model 'bert4rec'", result.output)
