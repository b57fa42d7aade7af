"""Corrupt, truncated and half-written checkpoints; retention; a full disk mid-save."""

from __future__ import annotations

import errno
import json
import random
import shutil

import numpy as np
import pytest
import torch

from recengine import checkpoint, training
from recengine.errors import UserError
from recengine.runs import RunDir


def save_simple(root, name, value: float = 1.0):
    return checkpoint.save(root, name, {"model.safetensors": {"w": torch.full((4, 4), value)}, "extra.safetensors": {"b": torch.ones(3)}},
                           {"loop": {"step": 1}})


@pytest.fixture
def trained(trained_two_epochs):
    return trained_two_epochs


DAMAGES = {
    "truncate": lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),
    "flip a byte": lambda f: f.write_bytes(bytes([f.read_bytes()[0] ^ 1]) + f.read_bytes()[1:]),
    "append a byte": lambda f: f.write_bytes(f.read_bytes() + b"\0"),
    "empty": lambda f: f.write_bytes(b""),
    "delete": lambda f: f.unlink(),
}
FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")


def test_every_way_to_damage_a_file_is_named_and_nothing_is_loaded(tmp_path, trained):
    """5 damages x 4 files = 20 faults: each is one error naming the file; the model is untouched."""
    recipe, run = trained
    latest = run.checkpoint("latest")
    pristine = tmp_path / "pristine"
    shutil.copytree(latest, pristine)
    model, adapter = training.build_model(recipe, run.read_data_info()["num_items"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tried = 0
    for filename in FILES:
        for what, damage in DAMAGES.items():
            shutil.rmtree(latest)
            shutil.copytree(pristine, latest)
            damage(latest / filename)
            with pytest.raises(UserError) as err:
                training.load_weights(run, model, adapter, "latest")
            message = str(err.value)
            assert str(latest / filename) in message and "\n" not in message, (filename, what, message)
            assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), f"{filename}/{what}: model half-loaded"
            tried += 1
    shutil.rmtree(latest)
    shutil.copytree(pristine, latest)
    training.load_weights(run, model, adapter, "latest")  # the undamaged copy loads
    assert tried == len(FILES) * len(DAMAGES) == 20


def test_manifest_damage_and_unlisted_files(tmp_path):
    path = save_simple(tmp_path, "step-00000001")
    (path / "sneaky.safetensors").write_bytes(b"x")
    with pytest.raises(UserError, match="sneaky.safetensors: not listed"):
        checkpoint.verify(path)
    (path / "sneaky.safetensors").unlink()
    for bad in ("{", "[]", '{"model.safetensors": 3}', '{"model.safetensors": {"bytes": "x"}}', "\xff"):
        (path / "manifest.json").write_text(bad, encoding="latin-1")
        with pytest.raises(UserError, match="manifest.json: corrupt manifest"):
            checkpoint.verify(path)
    (path / "manifest.json").write_text(json.dumps({"../escape": {"bytes": 1, "sha256": "0"}}))
    with pytest.raises(UserError):
        checkpoint.verify(path)
    (path / "manifest.json").unlink()
    with pytest.raises(UserError, match="not a complete checkpoint"):
        checkpoint.verify(path)


def test_retention_keeps_last_n_and_best(trained):
    recipe, run = trained
    kept = sorted(p.name for p in run.checkpoints.glob("step-*"))
    best = checkpoint.read_pointer(run.checkpoints, "best").name
    latest = checkpoint.read_pointer(run.checkpoints, "latest").name
    last_two = [f"step-{s:08d}" for s in (12, 14)]  # 2 epochs x 7 steps, every 2 steps, keep_last = 2
    assert latest == last_two[-1]
    assert set(kept) == set(last_two) | {best}
    assert not [p for p in run.checkpoints.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_full_disk_mid_save_keeps_previous_checkpoint_and_stops(tiny_recipe, new_run, quiet, monkeypatch):
    recipe = tiny_recipe("train.epochs=1", "train.checkpoint_every_steps=1")
    run = new_run(recipe)
    real_save_file = checkpoint.save_file
    calls = {"n": 0}

    def save_file(tensors, filename):
        calls["n"] += 1
        if calls["n"] == 3 * 3 + 2:  # 4th checkpoint, its 2nd file
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        real_save_file(tensors, filename)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    with pytest.raises(UserError) as err:
        training.train(recipe, run, console=quiet)
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message and "step-00000004" in message and "--resume" in message
    latest = run.checkpoint("latest")
    assert latest.name == "step-00000003"
    checkpoint.verify(latest)
    assert not [p for p in run.checkpoints.iterdir() if p.name.startswith(".")], "tmp dir not cleaned"


def test_full_disk_on_pointer_write_leaves_old_pointer(tmp_path, monkeypatch):
    save_simple(tmp_path, "step-00000001")
    checkpoint.set_pointer(tmp_path, "latest", "step-00000001")
    real_replace = checkpoint.os.replace

    def replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    with pytest.raises(OSError):
        checkpoint.set_pointer(tmp_path, "latest", "step-00000002")
    monkeypatch.setattr(checkpoint.os, "replace", real_replace)
    assert checkpoint.read_pointer(tmp_path, "latest").name == "step-00000001"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000001"]


def test_resave_of_same_step_survives_a_kill_between_renames(tmp_path):
    """`_install` renames the old copy aside before the new one takes its name; if the process
    dies in between, loading falls back to the newest complete checkpoint."""
    run = RunDir(tmp_path)
    root = run.checkpoints
    save_simple(root, "step-00000006", 0.5)
    save_simple(root, "step-00000007", 1.0)
    checkpoint.set_pointer(root, "latest", "step-00000007")
    (root / "step-00000007").rename(root / ".old-step-00000007-123")  # the moment of the kill
    assert run.checkpoint("latest").name == ".old-step-00000007-123"
    (root / ".old-step-00000007-123" / "extra.safetensors").unlink()  # incomplete copies are skipped
    assert run.checkpoint("latest").name == "step-00000006"
    save_simple(root, "step-00000008", 2.0)  # the next save clears the leftover
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000006", "step-00000008"]


def test_host_rng_states_round_trip_as_json():
    random.seed(5), np.random.seed(5)
    saved = json.loads(json.dumps(training.host_rng_state()))  # plain JSON, no pickle
    expected = (random.random(), np.random.random(), np.random.normal())
    random.seed(99), np.random.seed(99)
    training.set_host_rng_state(saved)
    assert (random.random(), np.random.random(), np.random.normal()) == expected


def test_checkpoints_hold_every_rng_and_the_data_position(tiny_recipe, new_run, quiet):
    recipe = tiny_recipe("train.epochs=1", "train.checkpoint_every_steps=3")
    run = new_run(recipe)
    training.train(recipe, run, console=quiet)
    path = run.checkpoints / "step-00000006"
    state = checkpoint.load_state(path)
    assert set(state["rng"]) == {"python", "numpy"}
    assert (state["loop"]["epoch"], state["loop"]["batch"], state["loop"]["step"]) == (0, 6, 6)
    assert "torch" in checkpoint.load_tensors(path, "rng.safetensors")
