"""recengine.export / `recengine export`: round trips per format, the eager check, errors."""

import json

import pytest
import torch
from typer.testing import CliRunner

from recengine.cli.main import app
from recengine.errors import UserError
from recengine.export import FORMATS, TopK, check_artifact, export_run, for_export, load_artifact, missing_packages, random_windows


def needs(fmt: str):
    missing = missing_packages(fmt)
    return pytest.mark.skipif(bool(missing), reason=f"{fmt} export needs {', '.join(missing)} (pip install 'recengine[onnx]')")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [pytest.param(f, marks=needs(f)) for f in FORMATS])
def test_round_trip_gives_the_eager_top_k(run_dir, recommender, tmp_path, fmt):
    out = export_run(run_dir, fmt, tmp_path / fmt, k=8)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["format"] == fmt and meta["k"] == 8 and meta["input_length"] == recommender.max_len - 1
    assert meta["num_items"] == 50 and meta["checked_histories"] > 0
    assert json.loads((out / "item_ids.json").read_text()) == recommender.item_ids
    assert sorted(p.name for p in out.iterdir()) == sorted([meta["artifact"], "item_ids.json", "metadata.json"])

    artifact = load_artifact(out)
    # random histories of random lengths, batch sizes other than the traced one
    for batch in (1, 5, 33):
        tokens = random_windows(50, recommender.max_len - 1, batch, torch.Generator().manual_seed(batch))
        ids, scores = artifact.top_k(tokens)
        ref_ids, ref_scores = TopK(recommender.model, 8)(tokens)
        assert ids.shape == (batch, 8) and ids.dtype == torch.int64
        torch.testing.assert_close(scores, ref_scores, rtol=1e-4, atol=1e-4)
        assert (ids == ref_ids).float().mean() > 0.99  # only exact ties could swap
    histories = [["1", "2", "3"], ["9"], [str(i) for i in range(1, 12)]]
    api = recommender.recommend(histories, k=8)
    for got, want in zip(artifact.recommend(histories), api):
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-4, abs=1e-4)


@needs("torchscript")
def test_artifact_rejects_bad_input_like_the_api(run_dir, tmp_path):
    artifact = load_artifact(export_run(run_dir, "torchscript", tmp_path / "ts", k=5))
    with pytest.raises(UserError, match=r"unknown item id\(s\) zzz"):
        artifact.recommend([["1", "zzz"]])
    with pytest.raises(UserError, match="empty history"):
        artifact.recommend([[]])
    with pytest.raises(UserError, match="between 1 and 5"):
        artifact.recommend([["1"]], k=6)
    long = [str(1 + i % 50) for i in range(40)]  # truncated to the last max_len - 1 items
    assert artifact.recommend([long]) == artifact.recommend([long[-(artifact.input_length):]])


def test_check_fails_loudly_when_the_artifact_differs(recommender):
    module = TopK(recommender.model, 5).eval()

    class Wrong:
        metadata = {"format": "torchscript"}

        def top_k(self, tokens):
            ids, scores = module(tokens)
            return ids.flip(1), scores.flip(1)

    with pytest.raises(UserError, match=r"differs from the eager model on \d+ of 1 random histories"):
        check_artifact(module, Wrong())


def test_a_format_that_cannot_represent_the_model_says_why(run_dir, tmp_path, monkeypatch):
    original = TopK.forward

    def data_dependent(self, tokens):  # Python control flow on tensor values: torch.export can't capture it
        if int(tokens.sum()) > 0:
            return original(self, tokens)
        return original(self, tokens.flip(1))

    monkeypatch.setattr(TopK, "forward", data_dependent)
    with pytest.raises(UserError, match=r"--format torch-export cannot represent this model \(BERT4Rec\): \w+"):
        export_run(run_dir, "torch-export", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_missing_onnx_dependency_is_one_clear_line(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("recengine.export.importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"--format onnx needs the onnx, onnxscript, onnxruntime package\(s\): pip install onnx"):
        export_run(run_dir, "onnx", tmp_path / "out")


@pytest.mark.slow
def test_cli_export_and_its_errors(run_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "exported"
    result = runner.invoke(app, ["export", str(run_dir), "--format", "torch-export", "--out", str(out), "-k", "4"])
    assert result.exit_code == 0, result.output
    assert load_artifact(out).recommend([["1", "2"]])[0] and json.loads((out / "metadata.json").read_text())["k"] == 4

    again = runner.invoke(app, ["export", str(run_dir), "--format", "torch-export", "--out", str(out)])
    assert again.exit_code == 1 and "already exists; pass --overwrite" in again.output
    replaced = runner.invoke(app, ["export", str(run_dir), "--format", "torchscript", "--out", str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "metadata.json").read_text())["format"] == "torchscript"

    bad = runner.invoke(app, ["export", str(run_dir), "--format", "tflite", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "unknown format 'tflite'" in bad.output and "Traceback" not in bad.output


def test_export_uses_the_adapters_for_export(recommender):
    from recengine_plugins.defaults import NoAdapter

    assert for_export(recommender.model, NoAdapter()) is recommender.model

    class Merging:  # stands in for LoRA: export gets a different (merged) module
        def for_export(self, model):
            return merged

    merged = torch.nn.Linear(2, 2)
    assert for_export(recommender.model, Merging()) is merged

    class Old:
        def adapt(self, model):
            return model

    with pytest.raises(UserError, match="adapter Old has no for_export"):
        for_export(recommender.model, Old())
