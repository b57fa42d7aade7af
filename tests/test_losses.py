"""Each loss decreases on a tiny problem."""

import math

import pytest

from recengine.data.batching import masked_positions
import torch

from recengine.data.next_item import NextItemBatches
from recengine.data.split import leave_one_out
from recengine.losses import build_loss
from recengine.recipe import TrainSection
from recengine_plugins.bert4rec import bert4rec
from recengine_plugins.synthetic import synthetic


@pytest.mark.parametrize("loss", ["ce", "sampled_softmax", "gbce", "focal"])
def test_loss_decreases(loss):
    torch.manual_seed(0)
    split = leave_one_out(synthetic(users=64, items=40, mean_length=8, seed=0).sequences)
    model = bert4rec(40, hidden=16, layers=1, max_len=8, dropout=0.0, attention_dropout=0.0)
    cfg = TrainSection(loss=loss, loss_negatives=10, batch_size=64)
    fn = build_loss(model, cfg, split.train.item_counts())
    batch = next(NextItemBatches(split.train, 8, 64).epoch(0))  # a fixed batch, no [MASK] needed for the check
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        torch.manual_seed(1)  # the same negatives every step: a fair before/after comparison
        value = fn(model.encode(batch.inputs), batch.positions, batch.targets)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(value.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0]


def test_gbce_with_t_zero_is_plain_bce():
    torch.manual_seed(0)
    model = bert4rec(20, hidden=8, layers=1, max_len=4)
    hidden = torch.randn(2, 4, 8)
    labels = torch.tensor([[0, 3, 0, 5], [0, 0, 0, 7]])
    torch.manual_seed(2)
    zero = build_loss(model, TrainSection(loss="gbce", gbce_t=0.0, loss_negatives=5))(hidden, *masked_positions(labels))
    torch.manual_seed(2)
    one = build_loss(model, TrainSection(loss="gbce", gbce_t=1.0, loss_negatives=5))(hidden, *masked_positions(labels))
    assert zero.item() != one.item()  # t changes beta, so the loss


def test_gbce_matches_the_formula_written_out():
    # loss = mean over masked slots of [beta * -log sigmoid(s+) - sum_neg log(1 - sigmoid(s-))] / (N + 1),
    # beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = N / (items - 1); a negative equal to the target is dropped;
    # s is the model's score shifted by log(beta / N).
    torch.manual_seed(0)
    items, negatives, t = 20, 5, 0.75
    model = bert4rec(items, hidden=8, layers=1, max_len=4)
    hidden = torch.randn(2, 4, 8)
    labels = torch.tensor([[0, 3, 0, 5], [0, 0, 0, 7]])
    positions, targets = masked_positions(labels)
    torch.manual_seed(2)
    value = build_loss(model, TrainSection(loss="gbce", gbce_t=t, loss_negatives=negatives))(hidden, positions, targets)
    torch.manual_seed(2)
    sampled = torch.randint(1, items + 1, (negatives,))
    alpha = negatives / (items - 1)
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
    weight, bias = model.output_embedding()
    per_slot = []
    for position, target in zip(positions.tolist(), targets.tolist()):
        if target < 0:
            continue
        query = model.project(hidden.reshape(-1, 8)[position])
        shift = math.log(beta / negatives)  # every logit is shifted by the constant-score optimum
        score = lambda item: query @ weight[item] + bias[item] + shift
        term = -beta * torch.log(torch.sigmoid(score(target)))
        term = term - sum(torch.log(1 - torch.sigmoid(score(n))) for n in sampled.tolist() if n != target)
        per_slot.append(term / (negatives + 1))
    assert value.item() == pytest.approx(torch.stack(per_slot).mean().item(), rel=1e-5)


def test_focal_with_gamma_zero_is_cross_entropy():
    torch.manual_seed(0)
    model = bert4rec(20, hidden=8, layers=1, max_len=4)
    hidden = torch.randn(2, 4, 8)
    labels = torch.tensor([[0, 3, 0, 5], [0, 0, 0, 7]])
    ce = build_loss(model, TrainSection(loss="ce"))(hidden, *masked_positions(labels))
    focal = build_loss(model, TrainSection(loss="focal", focal_gamma=0.0))(hidden, *masked_positions(labels))
    assert focal.item() == pytest.approx(ce.item(), rel=1e-5)


def test_gbce_starts_at_the_constant_score_optimum():
    # BCE is not shift-invariant. Unshifted, its steepest early direction is to lower every score
    # to ~log(beta / N), which a model without a big output bias does by collapsing all queries
    # onto one direction (the quickstart plateau). With the shift, all-zero scores are already
    # that optimum: a common offset added to every score has (almost) zero gradient there.
    torch.manual_seed(0)
    model = bert4rec(400, hidden=8, layers=1, max_len=4)
    with torch.no_grad():
        model.output_weight.zero_()
    offset = torch.zeros((), requires_grad=True)
    weight, bias = model.output_embedding()
    model.output_embedding = lambda: (weight, bias + offset)
    labels = torch.tensor([[0, 3, 0, 5], [0, 0, 0, 7]])
    value = build_loss(model, TrainSection(loss="gbce", loss_negatives=256))(torch.randn(2, 4, 8), *masked_positions(labels))
    (grad,) = torch.autograd.grad(value, offset)
    assert abs(grad.item()) < 1e-3 * value.item()
