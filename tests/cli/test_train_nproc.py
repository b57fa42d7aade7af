"""`recengine train RECIPE --nproc 2`: the torchrun shortcut, end to end through the CLI (CPU, gloo)."""

import json
import os
import re
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


def test_nproc_checks_the_recipe_before_starting_processes(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(textwrap.dedent(TINY_RECIPE))
    done = subprocess.run([sys.executable, "-m", "recengine", "train", str(recipe), "--nproc", "2", "train.lr=-1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.count("train.lr: Input should be greater than 0") == 1  # said once, by the launcher
    assert "torch.distributed" not in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    (tmp_path / "runs" / "taken" / "recipe.toml").write_text("")
    done = subprocess.run([sys.executable, "-m", "recengine", "train", str(recipe), "--nproc", "2", "--name", "taken",
                           "--output-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.count("run directory already exists; resume it with --resume") == 1
    assert "torch.distributed" not in done.stderr


@pytest.mark.slow
def test_a_mistake_found_inside_the_processes_ends_in_one_line_not_torchruns_traceback(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(textwrap.dedent(TINY_RECIPE))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "recengine", "train", str(recipe), "--nproc", "2", "--output-dir", str(tmp_path),
                           "model.tied=true", 'distributed.input_embedding_grads="touched-rows"'],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert "error: distributed.input_embedding_grads: \"touched-rows\" needs an input item table" in done.stderr
    # Both ranks fail alike; whichever torchrun sees first, it stops the other (SIGTERM), which is not named.
    assert re.search(r"error: (rank [01] failed \(exit code 1\); its message is above"
                     r"|ranks 0, 1 failed \(exit code 1\); their messages are above)", done.stderr)
    assert "Traceback" not in done.stderr
