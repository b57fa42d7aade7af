"""Kill -9 a real `recengine train` process at chosen moments, resume, and compare the final
weights with an uninterrupted run, bit for bit (CPU, fixed seed).

The figures in docs/reliability.md come from this test (run with `-s` to see its table).
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from recengine import checkpoint, training

DRIVER = Path(__file__).with_name("fault_driver.py")

# One process per entry, each resuming the previous one: the fault it arms, as
# (hook, n) or ("random", k) = kill at a random moment just after its k-th step starts.
SCHEDULE = [
    ("step", 3),  # mid-training, before the first process's 3rd step
    ("save_file", 2),  # mid-checkpoint: 2 of 3 tensor files in the temporary dir
    ("set_pointer", 1),  # checkpoint renamed into place, `latest` not updated yet
    ("old_rename", 1),  # same-step checkpoint renamed aside: no step-N directory exists
    ("trash", 1),  # pruning: an old checkpoint half deleted
    ("random", 2),
    ("random", 1),
]
CHECKPOINT_EVERY = "train.checkpoint_every_steps=1"  # the most checkpoint writes to land in


def child_env(events: Path, fault: str | None) -> dict[str, str]:
    env = {**os.environ, "FAULT_EVENTS": str(events), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("FAULT", None)
    if fault:
        env["FAULT"] = fault
    return env


def start(args: list[str], events: Path, fault: str | None) -> subprocess.Popen:
    events.write_text("")
    return subprocess.Popen([sys.executable, str(DRIVER), "train", *args], env=child_env(events, fault),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(proc: subprocess.Popen, events: Path, predicate, timeout: float = 60) -> bool:
    """Poll the events file until ``predicate(lines)``; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = events.read_text().splitlines()
        if predicate(lines):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError(f"no event within {timeout}s")


def steps_seen(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("step ")]


def final_tensors(run: Path) -> dict[str, torch.Tensor]:
    latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    tensors = {f"model/{k}": v for k, v in load_file(latest / "model.safetensors").items()}
    tensors.update({f"optimizer/{k}": v for k, v in load_file(latest / "optimizer.safetensors").items()})
    return tensors


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: the cost without other jobs' load."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def reference_run(recipe, run) -> None:
    """The uninterrupted run, in this process with the children's thread count (saves a start-up)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        training.train(recipe, run, console=Console(file=io.StringIO()))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_kill_anywhere_then_resume_gives_identical_weights(tmp_path, tiny_recipe, tiny_recipe_path, new_run):
    cpu_before = cpu_seconds()
    out = tmp_path / "runs"
    reference_run(tiny_recipe(CHECKPOINT_EVERY), new_run(tiny_recipe(CHECKPOINT_EVERY), "runs/ref"))

    rng = random.Random(9)
    run = out / "faulty"
    events = tmp_path / "events"
    log = []  # one record per process
    for i, (hook, n) in enumerate(SCHEDULE + [(None, 0)]):
        args = ["--resume", str(run)] if i else [str(tiny_recipe_path), CHECKPOINT_EVERY, "--output-dir", str(out), "--name", "faulty"]
        fault = f"{hook}:{n}:pause" if hook not in (None, "random") else None
        proc = start(args, events, fault)
        if hook is None:
            proc.wait(timeout=120)
            assert proc.returncode == 0, proc.stderr.read()[-2000:]
            break
        if hook == "random":
            reached = wait_for(proc, events, lambda lines: len(steps_seen(lines)) >= n)
            time.sleep(rng.uniform(0, 0.3))  # anywhere: a step, a checkpoint write, a validation
        else:
            reached = wait_for(proc, events, lambda lines: any(line == f"PAUSED {hook}" for line in lines))
        assert reached, f"process {i} ended before its fault {hook}:{n}: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        lines = events.read_text().splitlines()
        resumed = [int(line.split()[1]) for line in lines if line.startswith("resumed ")]
        leftovers = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("."))
        log.append({"fault": hook, "resumed_from": resumed[0] if resumed else 0, "last_step_started": max(steps_seen(lines), default=None),
                    "partial_files_left": leftovers})

    # Each resume started from the last complete checkpoint: never behind the previous resume point.
    starts = [entry["resumed_from"] for entry in log[1:]]
    assert starts == sorted(starts)
    ref_tensors, got = final_tensors(out / "ref"), final_tensors(run)
    assert ref_tensors.keys() == got.keys()
    mismatched = [k for k in ref_tensors if not torch.equal(ref_tensors[k], got[k])]
    assert not mismatched, f"tensors differ after resume: {mismatched[:5]}"
    ref_results = json.loads((out / "ref" / "results.json").read_text())
    got_results = json.loads((run / "results.json").read_text())
    assert got_results["test"]["model"] == ref_results["test"]["model"]
    assert got_results["best_epoch"] == ref_results["best_epoch"]
    assert not list((run / "checkpoints").glob(".*-step-*")), "temporary checkpoint copies left behind"

    kills = len(log)
    mid_write = sum(entry["fault"] in ("save_file", "old_rename", "set_pointer", "trash") for entry in log)  # random ones may land there too
    print(f"\nkill -9 then --resume: {kills} kills ({mid_write} inside checkpoint writing/pruning, "
          f"{sum(e['fault'] == 'random' for e in log)} at random moments), {len(ref_tensors)} tensors compared, 0 differ; "
          f"{cpu_seconds() - cpu_before:.0f} CPU s in all")
    for entry in log:
        print(f"  {entry}")
    assert kills == len(SCHEDULE) == 7 and mid_write == 4


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_stops_the_cli_with_one_line(tmp_path, tiny_recipe_path):
    events = tmp_path / "events"
    run = tmp_path / "runs" / "full"
    # ENOSPC on the 5th tensor file: the 2nd checkpoint (step 2), after its first file was written
    proc = start([str(tiny_recipe_path), CHECKPOINT_EVERY, "--output-dir", str(tmp_path / "runs"), "--name", "full"], events, "save_file:5:enospc")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "step-00000002" in errors[0] and f"--resume {run}" in errors[0], stderr[-2000:]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000001"
    checkpoint.verify(run / "checkpoints" / "step-00000001")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-00000001"]
    print(f"\nfull disk mid-checkpoint via the CLI: exit 1, one line: {errors[0]}")
