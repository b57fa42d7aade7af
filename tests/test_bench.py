"""The step benchmark's warm-up (recengine/bench.py): every timed shape is met before timing."""

import itertools

import torch

from recengine import bench
from recengine.bench import batch_stream, bench_steps, shape_of
from recengine.data.batching import Batch

from .conftest import random_batches, tiny_train_step


def _batches(length_grouping: int):
    return random_batches(40, 16, 0.2, length_grouping=length_grouping)


def test_two_streams_with_the_same_skip_deliver_the_same_batches():
    batches = _batches(4)
    a = list(itertools.islice(batch_stream(batches, 25), 10))  # crosses an epoch end (19 batches per epoch)
    b = list(itertools.islice(batch_stream(batches, 25), 10))
    assert all(torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets) for x, y in zip(a, b))


class CountingStep:
    """A TrainStep stand-in recording the shape of each batch it is called with."""

    def __init__(self, step):
        self.step, self.cfg, self.shapes = step, step.cfg, []

    def __call__(self, batch, lr):
        self.shapes.append(shape_of(batch))
        return self.step(batch, lr)


def test_every_timed_shape_runs_three_times_before_the_timed_steps():
    batches = _batches(4)
    model, step = tiny_train_step(40)
    step = CountingStep(step)
    result = bench_steps(model, step, batches, steps=12, warmup=2, device=torch.device("cpu"), low_precision=False)
    timed = step.shapes[-12:]
    before = step.shapes[2:-12]  # after the plain warm-up, before timing
    assert result["distinct_shapes"] == len(set(timed)) > 1  # grouping gives batches of several lengths
    assert all(before.count(shape) == 3 for shape in set(timed)) and len(before) == 3 * len(set(timed))


class TwoShapes:
    """Stands in for ClozeBatches: batches alternate between two trimmed lengths."""

    batch_size = 16

    def epoch(self, epoch):
        for i in range(6):
            g = torch.Generator().manual_seed(i)
            t = 16 if i % 2 == 0 else 24
            inputs = torch.randint(1, 31, (16, t), generator=g)
            yield Batch(inputs, torch.zeros_like(inputs), torch.randperm(16 * t, generator=g)[:32], torch.randint(1, 31, (32,), generator=g))


def test_every_compiled_graph_meets_every_timed_shape_before_timing():
    # A later shape can make torch compile a more general graph that then serves the earlier
    # shapes too: each of them must have run on it before the timed window starts.
    runs = []  # (graph id, input shapes) per call of a compiled graph

    @torch._dynamo.register_backend(name="recording_test_backend")
    def recording(gm, example_inputs):
        graph = recording.compiled
        recording.compiled += 1
        return lambda *args: runs.append((graph, tuple(a.shape for a in args if isinstance(a, torch.Tensor)))) or gm.forward(*args)

    recording.compiled = 0
    torch._dynamo.reset()
    model, step = tiny_train_step(40, compiler={"name": "torch-compile", "backend": "recording_test_backend"})
    calls_before = []
    timer_mark = bench._Timer.mark

    def mark(self):  # the first mark opens the timed window
        if not calls_before:
            calls_before.append(len(runs))
        return timer_mark(self)

    bench._Timer.mark = mark
    try:
        result = bench_steps(model, step, TwoShapes(), steps=6, warmup=0, device=torch.device("cpu"), low_precision=False)
    finally:
        bench._Timer.mark = timer_mark
        torch._dynamo.reset()
    before, timed = set(runs[: calls_before[0]]), set(runs[calls_before[0]:])
    assert timed and timed <= before
    assert result["compile_events_in_window"] == {}  # torch's own counters agree: nothing compiled while timing
    assert bench.compile_counters()["frames.total"] >= 1  # and they do count compiles


def test_a_shared_machine_is_flagged():
    assert bench.measurement_warnings({"host_load_1min": 0.5, "host_cores": 16, "gpu_gb_held_by_others": 0.0}) == []
    busy = bench.measurement_warnings({"host_load_1min": 40.0, "host_cores": 16, "gpu_gb_held_by_others": 12.0})
    assert len(busy) == 2 and "load 40.0 on 16 cores" in busy[0] and "12.0 GB" in busy[1]
    here = bench.machine_load(torch.device("cpu"))
    assert here["host_cores"] >= 1 and "gpu_gb_held_by_others" not in here


def test_a_compile_that_gave_up_is_flagged():
    # Past dynamo's recompile limit the step runs eagerly without a word; the bench must say so.
    from recengine.plugins import load_registry
    from recengine.recipe import resolve

    # The plugin sets the process-wide limit: restore it by hand (monkeypatch would delete the
    # config entry on undo, since it lives behind the config module's __getattr__).
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.reset()
    data = {"run": {"name": "gave-up", "seed": 0, "device": "cpu"},
            "dataset": {"name": "synthetic", "users": 200, "items": 50, "mean_length": 12, "seed": 0},
            "model": {"name": "bert4rec", "hidden": 16, "layers": 1, "heads": 1, "max_len": 40},
            "train": {"batch_size": 16, "length_grouping": 64},
            "compiler": {"name": "torch-compile", "backend": "eager", "dynamic": False, "recompile_limit": 1}}
    try:
        result = bench.bench_recipe(resolve(data, load_registry(), "test"), steps=6, warmup=0, eval_users=0, data_batches=0)
    finally:
        torch._dynamo.config.recompile_limit = limit
        torch._dynamo.reset()
    assert result["distinct_shapes"] > 1 and result["compile_gave_up"] >= 1
    assert any("recompile limit" in line for line in bench.measurement_warnings(result))
    assert not any("recompile limit" in line for line in bench.measurement_warnings({**result, "compile_gave_up": 0}))
