"""`recengine.ema`: the weight average's numerics, its swap, and what it writes into checkpoints."""

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from recengine.ema import MODEL_FILE, RAW_FILE, NoAverage, WeightAverage, weight_average


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    model[1].requires_grad_(False)  # frozen, as an adapter freezes the base: never averaged
    return model


def _set(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.fill_(value)


def test_decay_zero_is_the_no_op_object():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    average = weight_average(model, 0.0)
    assert isinstance(average, NoAverage)
    average.update(1)
    average.reset()
    assert isinstance(average.swapped(), nullcontext)
    state = model.state_dict()
    assert average.checkpoint_weights(lambda: state) == {MODEL_FILE: state}  # the model's weights, no raw file
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(weight_average(model, 0.999), WeightAverage)


def test_average_follows_a_hand_computed_ema_with_its_warm_up():
    model = _model()
    first = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    frozen = model[1].weight.detach().clone()
    decay = 0.2
    average = WeightAverage(model, decay)
    # Warm-up: min(0.2, (1 + t) / (10 + t)) is 2/11 at step 1, then 0.2 (3/12 = 0.25 > 0.2).
    expected = [a.clone() for a in first]
    for step, value in enumerate([1.0, -2.0, 4.0, 0.5], start=1):
        _set(model, value)
        average.update(step)
        d = min(decay, (1 + step) / (10 + step))
        expected = [d * e + (1 - d) * value for e in expected]
    assert [min(decay, (1 + t) / (10 + t)) for t in (1, 2)] == [2 / 11, 0.2]
    assert len(average.average) == len(expected) == 4  # the two linears' weights and biases, not the frozen norm
    for got, want in zip(average.average, expected):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # By hand for one element of the first weight: w0 -> ((2/11) w0 + (9/11) 1) -> 0.2 (...) + 0.8 (-2) -> ...
    w0 = first[0][0, 0].item()
    by_hand = 0.2 * (0.2 * (0.2 * (2 / 11 * w0 + 9 / 11 * 1.0) + 0.8 * -2.0) + 0.8 * 4.0) + 0.8 * 0.5
    assert average.average[0][0, 0].item() == pytest.approx(by_hand, rel=1e-6)
    assert torch.equal(model[1].weight, frozen)


def test_swapped_puts_the_average_in_and_restores_the_raw_weights_exactly():
    model = _model()
    average = WeightAverage(model, 0.5)
    _set(model, 3.0)
    average.update(100)  # decay 0.5: the average is halfway between the init and 3
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    swaps = []
    average.on_swap = lambda: swaps.append(1)
    with average.swapped():
        for p, a in zip((p for p in model.parameters() if p.requires_grad), average.average):
            assert torch.equal(p, a)
        assert not torch.equal(model[0].weight, raw["0.weight"])
        assert torch.equal(model[1].weight, raw["1.weight"])  # frozen: untouched
    assert all(torch.equal(raw[k], v) for k, v in model.state_dict().items())
    assert len(swaps) == 2  # after swapping in and after swapping back

    with pytest.raises(RuntimeError, match="inside"):
        with average.swapped():
            raise RuntimeError("inside")
    assert all(torch.equal(raw[k], v) for k, v in model.state_dict().items())


def test_checkpoint_weights_are_the_average_and_the_raw_weights():
    model = _model()
    average = WeightAverage(model, 0.5)
    _set(model, 3.0)
    average.update(100)
    files = average.checkpoint_weights(model.state_dict)  # one process: tensors that share the parameters' storage
    assert set(files) == {MODEL_FILE, RAW_FILE}
    assert torch.equal(files[RAW_FILE]["0.weight"], torch.full((4, 3), 3.0))
    assert torch.equal(files[MODEL_FILE]["0.weight"], average.average[0])
    assert torch.equal(files[MODEL_FILE]["1.weight"], model[1].weight)  # frozen tensors are saved as they are


def test_reset_restarts_the_average_from_the_model():
    model = _model()
    average = WeightAverage(model, 0.9)
    _set(model, 7.0)
    average.reset()
    assert all(torch.equal(a, torch.full_like(a, 7.0)) for a in average.average)
