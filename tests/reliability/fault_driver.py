"""Runs the real `recengine` CLI in a child process with one fault armed (test-only).

    FAULT=<hook>:<n>:<action>   arm the n-th call of <hook> (1-based); action is
                                `pause` (write PAUSED to the events file and sleep, so the
                                test can kill -9 the process at exactly that moment) or
                                `enospc` (raise OSError(ENOSPC) there: a full disk)
    FAULT_EVENTS=<file>         where progress lines go: `resumed <step>`, `step <n>`, `PAUSED <hook>`

Hooks (all are moments inside training or checkpoint writing):
    step        before optimizer step n (training, between checkpoints)
    save_file   after a safetensors file is written into a checkpoint's temporary dir
    set_pointer before a `latest`/`best` pointer is replaced (checkpoint renamed, pointers stale)
    old_rename  after a checkpoint of the same step is renamed aside and before the new one
                takes its name (no `step-N` directory at all for a moment)
    trash       during pruning, after the first file of an old checkpoint is deleted

The production code has no test hooks: this script wraps module functions before handing
control to the CLI's `main()`.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from pathlib import Path

from recengine import checkpoint, training
from recengine.cli.main import main

EVENTS = os.environ.get("FAULT_EVENTS")
hook, nth, action = (os.environ.get("FAULT") or "none:0:pause").split(":")
calls = {"n": 0}


def event(line: str) -> None:
    if EVENTS:
        with open(EVENTS, "a") as f:
            f.write(line + "\n")
            f.flush()


def fire(name: str, path: str = "") -> None:
    """The armed fault, when ``name`` is the armed hook and this is its n-th call."""
    if name != hook:
        return
    calls["n"] += 1
    if calls["n"] != int(nth):
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    event(f"PAUSED {name}")
    time.sleep(600)


def wrap_after(module, attr: str, name: str, path_arg: int | None = None, when=lambda *a: True):
    original = getattr(module, attr)

    def wrapped(*args, **kwargs):
        if action == "enospc" and when(*args):
            fire(name, str(args[path_arg]) if path_arg is not None else "")
        result = original(*args, **kwargs)
        if action == "pause" and when(*args):
            fire(name)
        return result

    setattr(module, attr, wrapped)


def wrap_before(module, attr: str, name: str, when=lambda *a: True):
    original = getattr(module, attr)

    def wrapped(*args, **kwargs):
        if when(*args):
            fire(name)
        return original(*args, **kwargs)

    setattr(module, attr, wrapped)


original_schedule = training.warmup_cosine


def schedule(step, *args, **kwargs):
    event(f"step {step}")
    fire("step")
    return original_schedule(step, *args, **kwargs)


original_resume = training.resume_state


def resume_state(*args, **kwargs):
    state = original_resume(*args, **kwargs)
    event(f"resumed {state.step}")
    return state


original_rmtree = shutil.rmtree


def rmtree(path, *args, **kwargs):
    if Path(path).name.startswith(".trash-") and hook == "trash":
        files = sorted(Path(path).iterdir())
        if files:
            files[0].unlink()  # a half-deleted directory, as a kill mid-delete leaves it
        fire("trash")
    return original_rmtree(path, *args, **kwargs)


training.warmup_cosine = schedule
training.resume_state = resume_state
shutil.rmtree = rmtree
wrap_after(checkpoint, "save_file", "save_file", path_arg=1)
wrap_before(checkpoint, "set_pointer", "set_pointer")
wrap_after(checkpoint.os, "replace", "old_rename", when=lambda src, dst, *a: Path(dst).name.startswith(".old-"))

if __name__ == "__main__":
    sys.argv[0] = "recengine"
    main()
