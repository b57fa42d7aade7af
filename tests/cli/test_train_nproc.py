"""`recengine train RECIPE --nproc 2`: the torchrun shortcut, end to end through the CLI (CPU, gloo)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ..conftest import TINY_RECIPE


@pytest.mark.slow
def test_nproc_trains_one_run_with_two_processes_and_rank_zero_writes(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(textwrap.dedent(TINY_RECIPE))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "recengine", "train", str(recipe), "--nproc", "2", "--name", "pair",
                           "--output-dir", str(tmp_path / "runs"), "train.epochs=2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "pair"
    results = json.loads((run / "results.json").read_text())
    assert results["epochs_run"] == 2
    valid = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in valid if line["split"] == "valid" and "epoch" in line] == [1, 2]  # written once, by rank 0
    assert "2 processes (ddp)" in done.stderr.replace("\n", " ")
