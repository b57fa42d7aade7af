import json

import pytest
import torch
from safetensors.torch import load_file

from recengine import checkpoint
from recengine.hookspecs import hookimpl
from recengine.plugins import load_registry
from recengine.recipe import load_recipe
from recengine.runs import RunDir
from recengine.training import train


class Crash(Exception):
    pass


class CrashAtStep:
    """A monitor plugin that simulates a crash once training reaches a given step."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    @hookimpl
    def register_monitors(self, register):
        def factory(options, log_dir):
            outer = self

            class Monitor:
                def log_scalars(self, step, values):
                    if step == outer.at_step:
                        raise Crash(f"simulated crash at step {step}")

                def log_hparams(self, hparams, metrics):
                    pass

                def close(self):
                    pass

            return Monitor()

        register("crash", factory)


def _run(tmp_path, name, recipe_path, overrides=(), extra=()):
    registry = load_registry(extra_plugins=extra)
    recipe = load_recipe(recipe_path, registry, list(overrides))
    run = RunDir(tmp_path / name)
    run.path.mkdir()
    return recipe, run


def _final_weights(run, filename="model.safetensors"):
    return load_file(str(checkpoint.read_pointer(run.checkpoints, "latest") / filename))


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
@pytest.mark.parametrize("checkpoint_every", [0, 3])
def test_resume_after_a_crash_gives_the_same_final_weights(tmp_path, tiny_recipe, checkpoint_every, ema_decay):
    overrides = [f"train.checkpoint_every_steps={checkpoint_every}", "train.patience=10", f"train.ema_decay={ema_decay}"]
    recipe, straight = _run(tmp_path, "straight", tiny_recipe, overrides)
    train(recipe, straight)

    # Crash at step 7 (epoch 2 of 3, 5 steps per epoch): resume from the last checkpoint,
    # step 5 (epoch end) or step 6 (mid-epoch).
    crash = [("crash-plugin", CrashAtStep(7))]
    recipe, crashed = _run(tmp_path, "crashed", tiny_recipe, overrides + ['monitors=[{name="crash"}]'], crash)
    with pytest.raises(Crash):
        train(recipe, crashed)
    resumed_from = checkpoint.load_state(checkpoint.read_pointer(crashed.checkpoints, "latest"))["loop"]["step"]
    assert resumed_from == (6 if checkpoint_every else 5)
    recipe, _ = _run(tmp_path, "unused", tiny_recipe, overrides)
    train(recipe, crashed, resume=True)

    # With a weight average, model.safetensors holds the average and raw.safetensors the weights trained on:
    # a resumed run must continue both (the raw weights from raw.safetensors, the average from model.safetensors).
    for filename in ["model.safetensors"] + (["raw.safetensors"] if ema_decay else []):
        a, b = _final_weights(straight, filename), _final_weights(crashed, filename)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (filename, key)
    assert json.loads(straight.results.read_text())["test"]["model"] == json.loads(crashed.results.read_text())["test"]["model"]


@pytest.mark.parametrize("before, after", [(0.9, 0.0), (0.0, 0.9)])
def test_a_run_resumed_with_the_weight_average_switched_trains_on_as_if_never_averaged(tmp_path, tiny_recipe, before, after):
    # Averaging never touches the weights trained on, so switching it at a resume must not either:
    # on -> off resumes from raw.safetensors (model.safetensors holds the average), off -> on from
    # model.safetensors (the raw weights: such a checkpoint has no raw.safetensors).
    overrides = ["train.checkpoint_every_steps=3", "train.patience=10"]
    recipe, straight = _run(tmp_path, "straight", tiny_recipe, overrides)
    train(recipe, straight)
    crash = [("crash-plugin", CrashAtStep(7))]
    recipe, crashed = _run(tmp_path, "crashed", tiny_recipe, overrides + [f"train.ema_decay={before}", 'monitors=[{name="crash"}]'], crash)
    with pytest.raises(Crash):
        train(recipe, crashed)
    recipe, _ = _run(tmp_path, "unused", tiny_recipe, overrides + [f"train.ema_decay={after}"])
    train(recipe, crashed, resume=True)
    trained = _final_weights(crashed, "raw.safetensors" if after else "model.safetensors")
    expected = _final_weights(straight)
    assert trained.keys() == expected.keys() and all(torch.equal(trained[k], expected[k]) for k in expected)


def test_a_weight_average_is_validated_and_checkpointed_and_leaves_training_alone(tmp_path, tiny_recipe, averages):
    overrides = ["train.patience=10", "train.checkpoint_every_steps=1", "train.keep_last=20"]  # every step's weights kept
    recipe, plain = _run(tmp_path, "plain", tiny_recipe, overrides)
    train(recipe, plain)
    recipe, averaged = _run(tmp_path, "averaged", tiny_recipe, overrides + ["train.ema_decay=0.9"])
    train(recipe, averaged)
    assert len(averages) == 2 and type(averages[0][1]).__name__ == "NoAverage"
    model, average, initial = averages[1]

    # Off: the checkpoint holds the weights trained, as before the option existed.
    assert not (checkpoint.read_pointer(plain.checkpoints, "latest") / "raw.safetensors").exists()
    # On: training is untouched (the swaps for validation and checkpoints restore the raw weights exactly) ...
    raw, unaveraged = _final_weights(averaged, "raw.safetensors"), _final_weights(plain)
    assert all(torch.equal(raw[k], unaveraged[k]) for k in unaveraged)
    # ... and model.safetensors holds the average, not the raw weights.
    final = _final_weights(averaged)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    assert len(names) == len(average.average) > 0
    for name, value in zip(names, average.average):
        assert torch.equal(final[name], value), name
    assert not all(torch.equal(final[n], raw[n]) for n in names)
    # The average is the warmed-up EMA of the raw weights after every step (15 steps: 3 epochs of 5),
    # replayed by hand from the initial weights and each step's raw.safetensors.
    expected = dict(zip(names, initial))
    for step in range(1, 16):
        raw_at = load_file(str(averaged.checkpoints / f"step-{step:08d}" / "raw.safetensors"))
        d = min(0.9, (1 + step) / (10 + step))
        expected = {n: d * v + (1 - d) * raw_at[n] for n, v in expected.items()}
    for n in names:
        torch.testing.assert_close(final[n], expected[n], rtol=1e-5, atol=1e-6)

    # Validation scored the weights the best checkpoint holds: the final evaluation of the best
    # checkpoint repeats the best epoch's validation exactly (it would not, had validation run on
    # the raw weights or had the checkpoint saved them).
    best = checkpoint.load_state(checkpoint.read_pointer(averaged.checkpoints, "best"))["loop"]["best_epoch"]
    records = [json.loads(line) for line in averaged.metrics.read_text().splitlines()]
    at_best = next(r for r in records if r["split"] == "valid" and r.get("epoch") == best)
    final_valid = next(r for r in records if r["split"] == "valid" and r.get("final"))
    assert {k: v for k, v in at_best.items() if k not in ("epoch", "step")} == {k: v for k, v in final_valid.items() if k != "final"}
    best_weights = load_file(str(checkpoint.read_pointer(averaged.checkpoints, "best") / "model.safetensors"))
    best_raw = load_file(str(checkpoint.read_pointer(averaged.checkpoints, "best") / "raw.safetensors"))
    assert not all(torch.equal(best_weights[n], best_raw[n]) for n in names)


@pytest.mark.slow
def test_training_beats_popularity_and_writes_the_run(tmp_path, tiny_recipe):
    recipe, run = _run(tmp_path, "run", tiny_recipe, ["train.epochs=8", "dataset.users=1000", "dataset.items=100", "train.batch_size=32", "model.hidden=32", "train.lr=5e-3", 'monitors=[{name="tensorboard"}]'])
    results = train(recipe, run)
    assert results["test"]["model"]["ndcg@10"] > 1.5 * results["test"]["popularity"]["ndcg@10"]
    assert run.recipe.exists() is False  # the CLI writes recipe.toml; train() writes the rest
    assert {p.name for p in run.path.iterdir()} >= {"data.json", "metrics.jsonl", "results.json", "checkpoints", "tensorboard"}
    lines = [json.loads(l) for l in run.metrics.read_text().splitlines()]
    assert [l["epoch"] for l in lines if l["split"] == "valid" and "epoch" in l] == list(range(1, 9))
    assert any(p.name.startswith("events.out.tfevents") for p in run.tensorboard.rglob("*"))
    best = checkpoint.read_pointer(run.checkpoints, "best")
    checkpoint.verify(best)
    assert len(list(run.checkpoints.glob("step-*"))) <= 3  # keep_last=2 plus the best


def test_clipping_folded_into_fused_adamw_equals_clip_grad_norm():
    from recengine.training import gradient_clipper

    def run(fused: bool):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=fused)
        clip = gradient_clipper(optimizer, torch.amp.GradScaler("cpu", enabled=False), max_norm=0.05)
        norms = []
        for i in range(3):
            optimizer.zero_grad()
            (model(torch.randn(4, 6, generator=torch.Generator().manual_seed(i))) ** 2).sum().backward()
            norms.append(clip(list(model.parameters())))
            optimizer.step()
        return [p.detach() for p in model.parameters()], norms

    (plain, plain_norms), (folded, folded_norms) = run(False), run(True)
    assert all(n > 0.05 for n in plain_norms)  # the clip was active on every step
    for a, b in zip(plain, folded):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.stack(plain_norms), torch.stack(folded_norms))


def test_a_crash_before_the_best_pointer_is_written_is_repaired_on_resume(tmp_path, tiny_recipe, monkeypatch):
    """A mid-epoch checkpoint at an epoch's last step is replaced by the validation's checkpoint
    of the same step; a crash right after that (before `best` is re-pointed) must not leave the
    final evaluation on an older best checkpoint."""
    overrides = ["train.checkpoint_every_steps=5", "train.patience=10"]  # 5 steps per epoch
    recipe, straight = _run(tmp_path, "straight", tiny_recipe, overrides)
    best_writes = []
    real_set_pointer = checkpoint.set_pointer

    def counting(root, pointer, name):
        best_writes.extend([name] if pointer == "best" else [])
        real_set_pointer(root, pointer, name)

    monkeypatch.setattr(checkpoint, "set_pointer", counting)
    train(recipe, straight)
    last_best = len(best_writes)

    def crash_at_last_best(root, pointer, name):
        best_writes.extend([name] if pointer == "best" else [])
        if pointer == "best" and len(best_writes) == 2 * last_best:
            raise Crash("killed before the best pointer was written")
        real_set_pointer(root, pointer, name)

    monkeypatch.setattr(checkpoint, "set_pointer", crash_at_last_best)
    recipe, crashed = _run(tmp_path, "crashed", tiny_recipe, overrides)
    with pytest.raises(Crash):
        train(recipe, crashed)
    monkeypatch.setattr(checkpoint, "set_pointer", real_set_pointer)
    train(recipe, crashed, resume=True)
    assert checkpoint.read_pointer(crashed.checkpoints, "best").name == best_writes[last_best - 1]
    assert json.loads(crashed.results.read_text())["test"]["model"] == json.loads(straight.results.read_text())["test"]["model"]


def test_the_fp16_loss_scale_is_checkpointed_and_restored(tmp_path, tiny_recipe):
    from recengine.training import adamw, build_model, resume_state

    recipe, run = _run(tmp_path, "fp16", tiny_recipe, ["train.epochs=1", 'precision={name="amp", dtype="fp16"}'])
    train(recipe, run)
    saved = checkpoint.load_state(checkpoint.read_pointer(run.checkpoints, "latest"))["scaler"]
    assert saved["scale"] > 1.0  # a real fp16 scaler's state, not the empty one of a disabled scaler

    model, adapter = build_model(recipe, json.loads(run.data.read_text())["num_items"])
    optimizer = adamw(model, 1e-3, 0.0, (0.9, 0.999), torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)  # a fresh run would start elsewhere
    resume_state(run, model, adapter, optimizer, scaler=scaler)
    assert scaler.get_scale() == saved["scale"]


class RankSpy:
    """A weight average that records when a checkpoint reads the model's state."""

    def __init__(self):
        self.reads = 0

    def checkpoint_weights(self, model_state):
        self.reads += 1
        return {"model.safetensors": model_state()}


@pytest.mark.parametrize("gathers_state", [False, True])
def test_only_rank_0_writes_and_ddp_ranks_skip_reading_state(tmp_path, gathers_state):
    # A non-main rank writes nothing. Under DDP (every rank holds the whole state) it also skips
    # reading it: that read swaps in the weight average and copies the optimizer state for nothing.
    # Under FSDP2 reading is a collective, so every rank must take part.
    from recengine.distributed import Single
    from recengine.training import LoopState, save_checkpoint
    from recengine_plugins.defaults import NoAdapter

    class OtherRank(Single):
        is_main, rank, world_size = False, 1, 2

    OtherRank.gathers_state = gathers_state
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    run, spy = RunDir(tmp_path / "run"), RankSpy()
    run.checkpoints.mkdir(parents=True)
    save_checkpoint(run, model, NoAdapter(), optimizer, LoopState(step=1), keep_last=2, best=True, dist=OtherRank(), average=spy)
    assert spy.reads == (1 if gathers_state else 0)
    assert list(run.checkpoints.iterdir()) == []
    save_checkpoint(run, model, NoAdapter(), optimizer, LoopState(step=1), keep_last=2, best=True, average=spy)  # rank 0
    assert checkpoint.read_pointer(run.checkpoints, "best") is not None
