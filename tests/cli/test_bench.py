import json

import pytest
import torch

from typer.testing import CliRunner

from recengine.bench import SHAPES, parse_matrix, shape_dataset
from recengine.cli.main import app
from recengine.model import count_parameters
from recengine_plugins import bert4rec as sizes


@pytest.mark.slow
def test_bench_quickstart_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "recipes/quickstart.toml", "--steps", "3", "--warmup", "1", "--eval-users", "200",
                                      "--data-batches", "5", "--json", str(out), "train.batch_size=32"])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert len(rows) == 1
    row = rows[0]
    assert row["batch_size"] == 32 and row["steps"] == 3
    assert row["samples_per_s"] > 0 and row["step_ms"] > 0
    assert row["flops_per_step"] > 0 and row["real_tokens_per_step"] <= row["padded_tokens_per_step"]
    assert row["data_samples_per_s"] > 0 and row["eval_users"] == 200 and row["eval_users_per_s"] > 0


def test_bench_matrix_and_shape_with_few_users(tmp_path):
    out = tmp_path / "m.json"
    result = CliRunner().invoke(app, ["bench", "recipes/quickstart.toml", "--shape", "quickstart", "--users", "300", "--steps", "2",
                                      "--warmup", "0", "--eval-users", "0", "--data-batches", "0", "--json", str(out),
                                      "--matrix", "precision=fp32,amp", "train.batch_size=16"])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [r["precision"] for r in rows] == ["fp32", "amp"]
    assert all(r["batch_size"] == 16 for r in rows)


def test_bench_unknown_shape_is_one_line_error():
    result = CliRunner().invoke(app, ["bench", "recipes/quickstart.toml", "--shape", "nope"])
    assert result.exit_code == 1 and "unknown" in result.output


def test_bench_matrix_typo_fails_before_any_setting_runs(tmp_path):
    out = tmp_path / "m.json"
    result = CliRunner().invoke(app, ["bench", "recipes/quickstart.toml", "--steps", "2", "--warmup", "0", "--eval-users", "0",
                                      "--data-batches", "0", "--json", str(out), "--matrix", "precision=fp32,fp8"])
    assert result.exit_code == 1 and "fp8" in result.output
    assert "bench precision=fp32" not in result.output  # fp32 was not benched first


@pytest.mark.parametrize("device_args", [["run.device=cuda"], ["--matrix", "run.device=cpu,cuda"]])
def test_bench_without_cuda_fails_before_building_data_or_models(monkeypatch, device_args):
    import recengine.bench as engine

    def must_not_run(*args, **kwargs):
        raise AssertionError("built data or benched a setting before the device was checked")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(engine, "shape_dataset", must_not_run)
    monkeypatch.setattr(engine, "bench_recipe", must_not_run)
    result = CliRunner().invoke(app, ["bench", "recipes/quickstart.toml", "--shape", "quickstart", "--matrix", "precision=fp32,amp",
                                      *device_args])
    assert result.exit_code == 1, result.output
    assert result.output == "error: run.device: 'cuda' asked for, but no CUDA device is available; use run.device=\"cpu\"\n"


def test_parse_matrix_is_the_cartesian_product():
    combos = parse_matrix(["precision=fp32,amp", "compiler=eager,torch-compile"])
    assert len(combos) == 4 and {"precision": "amp", "compiler": "torch-compile"} in combos


def test_shapes_match_the_named_bert4rec_sizes():
    for shape, build in [("electronics-85m", sizes.bert4rec_85m), ("electronics-130m", sizes.bert4rec_130m),
                         ("electronics-430m", sizes.bert4rec_430m)]:
        with torch.device("meta"):  # shapes only: no memory, no initialisation work
            assert count_parameters(sizes.bert4rec(100, **SHAPES[shape].model)) == count_parameters(build(100))


def test_shape_dataset_has_the_length_profile():
    data = shape_dataset(SHAPES["electronics-130m"], users=20_000)
    lengths = data.sequences.lengths
    assert lengths.min() >= 5 and 8 < lengths.mean() < 10 and lengths.max() > 50
    assert data.num_items == 160_054
