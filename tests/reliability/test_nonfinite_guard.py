"""Non-finite losses and gradients: skipped, warned, counted, and never applied."""

from __future__ import annotations

import pytest
import torch

from recengine import losses
from recengine import checkpoint, training
from recengine.errors import UserError
from recengine.guards import NonFiniteGuard, NonFiniteStepWarning
from recengine.plugins import load_registry
from recengine.recipe import load_recipe


class RecordingMonitor:
    def __init__(self):
        self.scalars: list[tuple[int, dict]] = []

    def log_scalars(self, step, values):
        self.scalars.append((step, dict(values)))

    def log_hparams(self, hparams, metrics):
        pass

    def close(self):
        pass


RECORDED: list[RecordingMonitor] = []


class RecorderPlugin:
    """An in-process plugin registering the `recorder` monitor."""

    from recengine.hookspecs import hookimpl

    @staticmethod
    @hookimpl
    def register_monitors(register):
        def factory(options, log_dir):
            RECORDED.append(RecordingMonitor())
            return RECORDED[-1]

        register("recorder", factory)


def optimizer_and_state(model, optimizer):
    params = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {k: {n: t.clone() if torch.is_tensor(t) else t for n, t in s.items()} for k, s in optimizer.state.items()}
    return params, moments


def same(a, b) -> bool:
    params_a, moments_a = a
    params_b, moments_b = b
    return all(torch.equal(params_a[k], params_b[k]) for k in params_a) and moments_a.keys() == moments_b.keys() and all(
        torch.equal(moments_a[p][n], moments_b[p][n]) for p in moments_a for n in moments_a[p])


@pytest.fixture
def step_parts(tiny_recipe):
    recipe = tiny_recipe("train.max_bad_steps=3")
    dataset, split = training.load_data(recipe)
    model, _ = training.build_model(recipe, dataset.num_items)
    optimizer = training.adamw(model, 1e-3, 0.01, (0.9, 0.999), torch.device("cpu"))
    from recengine.data.batching import ClozeBatches

    batches = list(ClozeBatches(split.train, model.max_len, 32, 0.2, seed=0).epoch(0))
    step = training.TrainStep(model, optimizer, recipe.precision.build(device=torch.device("cpu")), recipe.compiler.build(), recipe.train)
    return model, optimizer, step, batches


def test_nan_loss_and_nan_gradient_are_skipped_and_leave_everything_untouched(step_parts):
    model, optimizer, step, batches = step_parts
    step(batches[0], 1e-3)  # a good step first, so Adam has moments to protect
    before = optimizer_and_state(model, optimizer)

    real_loss_fn = step.loss_fn
    step.loss_fn = lambda *batch: real_loss_fn(*batch) * float("nan")
    with pytest.warns(NonFiniteStepWarning, match="step skipped"):
        step(batches[1], 1e-3)
    assert same(before, optimizer_and_state(model, optimizer))

    step.loss_fn = real_loss_fn
    weight = next(p for p in model.parameters() if p.requires_grad)
    handle = weight.register_hook(lambda grad: grad * float("inf"))  # finite loss, infinite gradient
    with pytest.warns(NonFiniteStepWarning):
        step(batches[1], 1e-3)
    handle.remove()
    assert same(before, optimizer_and_state(model, optimizer))
    assert (step.guard.skipped, step.guard.in_a_row) == (2, 2)

    step(batches[2], 1e-3)  # a finite step again: applied, and the run of bad steps resets
    assert not same(before, optimizer_and_state(model, optimizer))
    assert (step.guard.skipped, step.guard.in_a_row) == (2, 0)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_guard_stops_after_max_bad_steps_in_a_row():
    guard = NonFiniteGuard(max_bad_steps=3)
    stepped = []

    class Scaler:
        def step(self, optimizer):
            stepped.append(optimizer)

    nan, one = torch.tensor(float("nan")), torch.tensor(1.0)
    with pytest.warns(NonFiniteStepWarning):
        assert not guard.step(Scaler(), "opt", nan, one)
        assert not guard.step(Scaler(), "opt", one, torch.tensor(float("-inf")))
        assert guard.step(Scaler(), "opt", one, one)
        assert not guard.step(Scaler(), "opt", nan, one)
        assert not guard.step(Scaler(), "opt", nan, one)
        with pytest.raises(UserError, match="3 steps in a row.*train.max_bad_steps=3"):
            guard.step(Scaler(), "opt", nan, nan)
    assert stepped == ["opt"] and guard.skipped == 5


def test_training_counts_skips_for_monitors_and_stops_keeping_good_checkpoints(tiny_recipe_path, new_run, quiet, monkeypatch):
    registry = load_registry(extra_plugins=[("recorder", RecorderPlugin)])
    recipe = load_recipe(tiny_recipe_path, registry, ["train.max_bad_steps=4", "train.epochs=2", "monitors=[{name='recorder'}]"])
    run = new_run(recipe)
    real = losses.cross_entropy_at
    calls = {"n": 0}

    def flaky_loss(*args, **kwargs):
        calls["n"] += 1  # = the step number
        loss = real(*args, **kwargs)
        # steps 3 and 5 are bad alone (skipped, training goes on); from step 10 on, every step is bad
        return loss * float("nan") if calls["n"] in (3, 5) or calls["n"] >= 10 else loss

    monkeypatch.setattr(losses, "cross_entropy_at", flaky_loss)
    with pytest.warns(NonFiniteStepWarning):
        with pytest.raises(UserError, match="4 steps in a row"):
            training.train(recipe, run, console=quiet)
    assert calls["n"] == 13  # stopped at the 4th bad step in a row
    latest = run.checkpoint("latest")
    checkpoint.verify(latest)
    # checkpoints every 2 steps: step 12 (after skipped steps 10-12) holds the weights of step 9
    assert latest.name == "step-00000012"
    assert checkpoint.load_state(latest)["loop"]["skipped_steps"] == 5
    at_10 = checkpoint.load_tensors(run.checkpoints / "step-00000010", "model.safetensors")
    at_12 = checkpoint.load_tensors(latest, "model.safetensors")
    assert all(torch.isfinite(t).all() and torch.equal(t, at_10[k]) for k, t in at_12.items())
    logged = {step: values["train/skipped_steps"] for step, values in RECORDED[-1].scalars if "train/skipped_steps" in values}
    assert [logged[s] for s in (2, 3, 4, 5, 9, 10, 12)] == [0, 1, 1, 2, 2, 3, 5]
