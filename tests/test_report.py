import csv
import io
import json

import pytest

from recengine.errors import UserError
from recengine.report import collect, row_from_bench, to_csv, to_markdown, write_report

BENCH = {"recipe": "85m", "precision": "amp", "compiler": "torch-compile", "adapter": "none", "batch_size": 256,
         "parameters": 85_000_000, "trainable_parameters": 85_000_000, "step_ms": 40.0, "samples_per_s": 6400.0,
         "peak_memory_mb": 2048.0, "device": "NVIDIA H100 80GB HBM3", "torch": "2.13.0", "mfu": 0.31}


def test_bench_records_are_read_defensively():
    row = row_from_bench({"recipe": "x", "step_s": 0.05, "peak_memory_gb": 2, "tflops_per_s": 12.5, "unrelated": "y"})
    assert row["step_ms"] == pytest.approx(50.0)
    assert row["peak_memory_mb"] == 2048
    assert row["tflops_per_s"] == 12.5  # FLOPs/MFU keys of a newer bench are kept as columns
    assert "unrelated" not in row and row["self_cuda_ms"] is None and row["status"] == "ok"


def test_table_from_bench_json_and_a_run(tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps([BENCH, {**BENCH, "precision": "fp32", "compiler": "eager", "step_ms": 80.0}]))
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.toml").write_text('[run]\nname = "tiny"\n[dataset]\nname = "synthetic"\n'
                                     '[model]\nname = "bert4rec"\nhidden = 16\nlayers = 1\nheads = 1\nmax_len = 8\n')
    (run / "data.json").write_text(json.dumps({"num_items": 20, "item_ids": None}))
    (run / "results.json").write_text(json.dumps({"test": {"model": {"hr@10": 0.5, "ndcg@10": 0.25}}}))
    (run / "hardware.json").write_text(json.dumps({"device": "EPYC", "cpu_name": "AMD EPYC 9654", "cpu_count": 2, "gpu_count": 0}))
    rows = collect([tmp_path / "bench.json", run])
    assert [r["step_ms"] for r in rows] == [40.0, 80.0, None]
    trained = rows[2]
    assert (trained["recipe"], trained["precision"], trained["compiler"], trained["adapter"]) == ("tiny", "fp32", "eager", "none")
    assert (trained["hr@10"], trained["ndcg@10"]) == (0.5, 0.25)
    assert trained["parameters"] > 20 * 16  # counted from the recipe on the meta device
    assert (trained["cpu_name"], trained["cpu_count"]) == ("AMD EPYC 9654", 2)  # every hardware field reaches the row

    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert table[0]["samples_per_s"] == "6400.0" and table[0]["mfu"] == "0.31" and table[2]["step_ms"] == ""
    for heading in ("samples/s", "step ms", "peak memory MiB", "HR@10", "NDCG@10", "trainable parameters", "device"):
        assert heading in to_markdown(rows)
    lines = to_markdown(rows).splitlines()
    assert any("| 85m | amp | torch-compile | none | ok | 6,400.0 | 40.0 |" in line for line in lines)
    assert any("NVIDIA H100 80GB HBM3" in line and line.startswith("- device") for line in lines)
    assert any("cpu_name: AMD EPYC 9654" in line and line.startswith("- device") for line in lines)

    written = write_report(rows, tmp_path / "report")
    assert json.loads(written["json"].read_text())["rows"][0]["samples_per_s"] == 6400.0
    assert "![step_time](plots/step_time.png)" in written["markdown"].read_text()
    # A study directory (its results.json) reads back to the same rows.
    assert collect([tmp_path / "report"]) == json.loads(written["json"].read_text())["rows"]


def test_unknown_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        collect([tmp_path / "nothing"])
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="expected bench results"):
        collect([tmp_path / "bad.json"])
