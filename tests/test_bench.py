"""The step benchmark's warm-up (recengine/bench.py): every timed shape is met before timing."""

import itertools

import torch

from recengine.bench import batch_stream, bench_steps, shape_of
from recengine.data.batching import ClozeBatches
from recengine.data.sequences import Sequences
from recengine.plugins import load_registry
from recengine.recipe import resolve
from recengine.training import TrainStep, adamw


def _batches(length_grouping: int) -> ClozeBatches:
    g = torch.Generator().manual_seed(0)
    lengths = (3 + torch.randint(0, 40, (300,), generator=g)).tolist()
    seqs = Sequences.from_lists([torch.randint(1, 31, (n,), generator=g).tolist() for n in lengths], 30)
    return ClozeBatches(seqs, 40, 16, 0.2, seed=0, length_grouping=length_grouping)


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
    registry = load_registry()
    recipe = resolve({"run": {"device": "cpu"}, "dataset": {"name": "synthetic"},
                      "model": {"name": "bert4rec", "hidden": 16, "layers": 1, "heads": 2, "max_len": 40}}, registry)
    batches = _batches(4)
    model = recipe.model.build(num_items=30)
    step = CountingStep(TrainStep(model, adamw(model, 1e-3, 0.0, (0.9, 0.999), torch.device("cpu")), recipe.precision.build(device=torch.device("cpu")),
                                  recipe.compiler.build(), recipe.train))
    result = bench_steps(model, step, batches, steps=12, warmup=2, device=torch.device("cpu"), low_precision=False)
    timed = step.shapes[-12:]
    before = step.shapes[2:-12]  # after the plain warm-up, before timing
    assert result["distinct_shapes"] == len(set(timed)) > 1  # grouping gives batches of several lengths
    assert all(before.count(shape) == 3 for shape in set(timed)) and len(before) == 3 * len(set(timed))
