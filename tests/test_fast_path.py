"""The fast path (trimmed batches, fixed-size masked positions, chunked CE, amp, compile)
learns what the plain path learns: same data and seed, matching loss trajectories."""

import pytest
import torch
import torch.nn.functional as F

from recengine.data.batching import ClozeBatches
from recengine.data.sequences import PAD, Sequences
from recengine.model import SequenceModel
from recengine.plugins import load_registry
from recengine.recipe import TrainSection
from recengine.training import TrainStep, adamw
from recengine_plugins.bert4rec import bert4rec

CPU = torch.device("cpu")
CFG = TrainSection()


def plain_masked_cross_entropy(model: SequenceModel, hidden: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """The straightforward version (full logits at masked positions): the reference these tests compare against."""
    selected = labels != PAD
    queries = model.project(hidden[selected])
    weight, bias = model.output_embedding()
    logits = queries @ weight.t()
    if bias is not None:
        logits = logits + bias
    return F.cross_entropy(logits.float(), labels[selected], label_smoothing=label_smoothing)


def _seqs():
    g = torch.Generator().manual_seed(0)
    lengths = (3 + torch.randint(0, 20, (96,), generator=g)).tolist()
    return Sequences.from_lists([torch.randint(1, 81, (n,), generator=g).tolist() for n in lengths], 80)


def _model():
    torch.manual_seed(0)
    return bert4rec(80, hidden=32, layers=2, heads=2, max_len=24, dropout=0.0, attention_dropout=0.0)


def _plain_losses(steps):
    model = _model()
    opt = adamw(model, 3e-3, 0.01, (0.9, 0.999), CPU)
    losses = []
    for batch, _ in zip(ClozeBatches(_seqs(), 24, 16, 0.3, trim=False).epoch(0), range(steps)):
        loss = plain_masked_cross_entropy(model, model.encode(batch.inputs), batch.labels)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses


def _fast_losses(steps, precision="fp32", compiler=None):
    registry = load_registry()
    model = _model()
    step = TrainStep(model, adamw(model, 3e-3, 0.01, (0.9, 0.999), CPU), registry.get("precision", precision).build(device=CPU),
                     compiler or registry.get("compiler", "eager").build(), CFG)
    batches = ClozeBatches(_seqs(), 24, 16, 0.3, trim=True).epoch(0)
    return [step(batch, 3e-3)[0].item() for batch, _ in zip(batches, range(steps))]


def test_fp32_fast_path_matches_plain_path():
    plain, fast = _plain_losses(6), _fast_losses(6)
    for a, b in zip(plain, fast):
        assert abs(a - b) <= 1e-4 * abs(a)


@pytest.mark.slow
def test_amp_and_compile_fast_path_tracks_plain_path():
    compiler = load_registry().get("compiler", "torch-compile").build({"backend": "aot_eager"})
    plain, fast = _plain_losses(6), _fast_losses(6, "amp", compiler)
    for a, b in zip(plain, fast):
        assert abs(a - b) <= 3e-2 * abs(a)
