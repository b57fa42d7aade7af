"""The fine-tuning workflow: base run -> adapted run ([init] from_run) -> evaluate/recommend."""

import io
import json
import textwrap

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from recengine import checkpoint
from recengine.errors import UserError
from recengine.inference import load
from recengine.plugins import load_registry
from recengine.recipe import resolve
import tomllib
from recengine.runs import RunDir
from recengine.training import build_model, load_weights, train

torch.set_num_threads(1)

BASE = """
[run]
name = "base"
device = "cpu"
[dataset]
name = "synthetic"
users = 80
items = 30
mean_length = 8
[model]
name = "bert4rec"
hidden = 16
layers = 1
heads = 2
max_len = 12
[train]
epochs = 2
batch_size = 32
warmup_steps = 1
"""


def recipe_from(text, **sections):
    data = tomllib.loads(textwrap.dedent(text))
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return resolve(data, load_registry())


def train_into(path, recipe):
    run = RunDir(path)
    run.path.mkdir(parents=True)
    run.recipe.write_text(recipe.to_toml())
    out = io.StringIO()
    results = train(recipe, run, console=Console(file=out, width=200))
    return run, results, out.getvalue()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    run, _, _ = train_into(tmp_path_factory.mktemp("runs") / "base", recipe_from(BASE))
    return run


def adapted_recipe(base_run, adapter, **init):
    return recipe_from(BASE, adapter=adapter, init={"from_run": str(base_run.path), **init},
                       dataset={"phase": 1}, run={"name": "adapted"}, train={"lr": 1e-2})


@pytest.mark.parametrize("adapter", [{"name": "lora", "rank": 2}, {"name": "ilora", "rank": 4, "experts": 2}])
def test_adapter_run_saves_adapter_only_checkpoints_that_round_trip(tmp_path, base_run, adapter):
    recipe = adapted_recipe(base_run, adapter)
    run, results, printed = train_into(tmp_path / "adapted", recipe)
    assert "trainable, " in printed and "%)" in printed  # the trainable share is printed
    best = checkpoint.read_pointer(run.checkpoints, "best")
    saved = load_file(str(best / "model.safetensors"))
    assert saved and all(".lora_" in k or k.startswith("gate.") for k in saved)
    base_file = checkpoint.read_pointer(base_run.checkpoints, "best") / "model.safetensors"
    assert (best / "model.safetensors").stat().st_size < base_file.stat().st_size / 3
    reference = json.loads((run.path / "base.json").read_text())
    assert reference["checkpoint"] == checkpoint.read_pointer(base_run.checkpoints, "best").name and len(reference["sha256"]) == 64

    # Two fresh builds (different random adapter inits) load to the same model: base + adapter.
    outputs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model, loaded_adapter = build_model(recipe, 30, run)
        load_weights(run, model, loaded_adapter)
        assert all(torch.equal(loaded_adapter.trainable_state(model)[k], v) for k, v in saved.items())
        tokens = torch.tensor([[0, 0, 3, 4, 5, 31]])
        outputs.append(model.eval().encode(tokens))
    assert torch.equal(*outputs)
    recs = load(run.path, device="cpu").recommend([["3", "4", "5"]], k=5)
    assert len(recs[0]) == 5


def test_lora_merge_option_serves_the_same_recommendations(tmp_path, base_run):
    run, _, _ = train_into(tmp_path / "adapted", adapted_recipe(base_run, {"name": "lora", "rank": 2}))
    unmerged = load(run.path, device="cpu").recommend([["3", "4", "5"], ["7"]], k=5)
    text = run.recipe.read_text().replace("[adapter]\n", "[adapter]\nmerge = true\n").replace("merge = false\n", "")
    run.recipe.write_text(text)
    merged = load(run.path, device="cpu")
    assert not any(".lora_" in k for k in merged.model.state_dict())
    for a, b in zip(unmerged, merged.recommend([["3", "4", "5"], ["7"]], k=5)):
        assert [i for i, _ in a] == [i for i, _ in b]


def test_full_fine_tuning_and_train_output_start_from_the_base(base_run):
    base = load_file(str(checkpoint.read_pointer(base_run.checkpoints, "best") / "model.safetensors"))
    model, _ = build_model(adapted_recipe(base_run, {"name": "none"}), 30)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in base.items())
    model, adapter = build_model(adapted_recipe(base_run, {"name": "lora", "rank": 2}, train_output=True), 30)
    assert {"output_weight", "output_bias"} <= set(adapter.trainable_state(model))
    with pytest.raises(UserError, match="tied to its item embedding"):
        build_model(recipe_from(BASE, model={"tied": True}, adapter={"name": "lora"}, init={"train_output": True}), 30)


def test_changed_or_missing_base_run_gives_one_clear_error(tmp_path, base_run):
    import shutil
    base_copy = RunDir(tmp_path / "base-copy")
    shutil.copytree(base_run.path, base_copy.path)
    run, _, _ = train_into(tmp_path / "adapted", adapted_recipe(base_copy, {"name": "lora", "rank": 2}))
    # The base is retrained: same checkpoint name, other weights (a valid checkpoint, new hash).
    best = checkpoint.read_pointer(base_copy.checkpoints, "best")
    tensors = {k: v + 1 for k, v in load_file(str(best / "model.safetensors")).items()}
    checkpoint.save(base_copy.checkpoints, best.name, {"model.safetensors": tensors}, {})
    with pytest.raises(UserError, match="changed since this adapter was trained") as err:
        load(run.path, device="cpu")
    assert "\n" not in str(err.value)
    shutil.rmtree(base_copy.path)
    with pytest.raises(UserError, match="base run .* not found"):
        load(run.path, device="cpu")


def test_an_adapted_run_cannot_be_a_base(tmp_path, base_run):
    run, _, _ = train_into(tmp_path / "adapted", adapted_recipe(base_run, {"name": "lora", "rank": 2}))
    with pytest.raises(UserError, match="itself an adapted run"):
        build_model(adapted_recipe(run, {"name": "lora"}), 30)


def test_cli_evaluates_an_adapted_run_like_training_did_and_reports_a_missing_base(tmp_path, base_run):
    import shutil

    from typer.testing import CliRunner

    from recengine.cli.main import app

    base_copy = tmp_path / "base-copy"
    shutil.copytree(base_run.path, base_copy)
    run, results, _ = train_into(tmp_path / "adapted", adapted_recipe(RunDir(base_copy), {"name": "ilora", "rank": 4, "experts": 2}))
    result = CliRunner().invoke(app, ["evaluate", str(run.path), "--split", "test"])
    assert result.exit_code == 0, result.output
    assert f"{results['test']['model']['ndcg@10']:.4f}" in result.output
    shutil.rmtree(base_copy)
    result = CliRunner().invoke(app, ["recommend", str(run.path), "--history", "3,4"])
    assert result.exit_code == 1 and "base run" in result.output and "not found" in result.output
    assert "Traceback" not in result.output


def test_a_weight_average_of_an_adapter_averages_and_saves_the_adapter_alone(tmp_path, base_run, averages):
    recipe = recipe_from(BASE, adapter={"name": "lora", "rank": 2}, init={"from_run": str(base_run.path)},
                         dataset={"phase": 1}, run={"name": "adapted"}, train={"lr": 1e-2, "ema_decay": 0.9})
    run, _, _ = train_into(tmp_path / "adapted", recipe)
    (model, average, _), = averages
    adapter_keys = set(recipe.adapter.build().trainable_state(model))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == adapter_keys and len(average.average) == len(adapter_keys)

    best = checkpoint.read_pointer(run.checkpoints, "best")
    averaged, raw = load_file(str(best / "model.safetensors")), load_file(str(best / "raw.safetensors"))
    assert set(averaged) == set(raw) == adapter_keys  # adapter-only checkpoints, both files
    assert any(not torch.equal(averaged[k], raw[k]) for k in adapter_keys)
    # The frozen base is bit-identical to the base run's weights after training (in the trained
    # model itself, never swapped) and in a fresh load of the adapted run.
    base = load_file(str(checkpoint.read_pointer(base_run.checkpoints, "best") / "model.safetensors"))
    trained = model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in base.items())
    fresh, adapter = build_model(recipe, 30, run)
    load_weights(run, fresh, adapter)
    state = fresh.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base.items())
    assert all(torch.equal(state[k], v) for k, v in averaged.items())  # what evaluate and recommend load: the average
