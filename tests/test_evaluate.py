
"""Protocols: stored sampled negatives, batch-size invariance on a real model."""

import numpy as np
import pytest
import torch

from recengine.data import EvalSet, Sequences
from recengine.evaluate import evaluate, popularity_scorer


def _eval_set():
    inputs = Sequences.from_lists([[1, 2], [3], [2, 4]], num_items=5)
    return EvalSet(inputs, np.array([3, 5, 1]), np.arange(3))


def fixed_scorer(tokens):
    # item i scores i: 5 > 4 > 3 > 2 > 1
    return torch.arange(6, dtype=torch.float32).expand(tokens.shape[0], -1).clone()


def test_history_items_are_excluded_by_default():
    ev = _eval_set()
    with_exclusion = evaluate(fixed_scorer, ev, max_len=4, mask_token=6, ks=(1,))
    without = evaluate(fixed_scorer, ev, max_len=4, mask_token=6, ks=(1,), exclude_history=False)
    # user 0 (history 1,2; target 3): ahead of 3 are 5,4 either way -> rank 2
    # user 1 (history 3; target 5): rank 0 either way
    # user 2 (history 2,4; target 1): excluded -> 5,3 ahead (rank 2); not excluded -> 5,4,3,2 (rank 4)
    assert with_exclusion["mrr"] == pytest.approx((1 / 3 + 1 + 1 / 3) / 3)
    assert without["mrr"] == pytest.approx((1 / 3 + 1 + 1 / 5) / 3)
    assert with_exclusion["hr@1"] == pytest.approx(1 / 3)


def test_results_do_not_depend_on_batch_size():
    ev = _eval_set()
    pop = popularity_scorer(np.array([0, 5, 1, 3, 2, 4]))
    results = [evaluate(pop, ev, max_len=4, mask_token=6, batch_size=b) for b in (1, 2, 64)]
    assert results[0] == results[1] == results[2]

from recengine.data.split import leave_one_out
from recengine.errors import UserError
from recengine.evaluate import NEGATIVES_FILE, draw_negatives, evaluate, load_or_draw_negatives, model_scorer
from recengine_plugins.bert4rec import bert4rec
from recengine_plugins.sasrec import sasrec
from recengine_plugins.synthetic import synthetic


@pytest.fixture(scope="module")
def data():
    dataset = synthetic(users=300, items=80, mean_length=12, seed=1)
    return dataset, leave_one_out(dataset.sequences)


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_negatives_never_in_history_and_distinct(data, sampling):
    dataset, _ = data
    seqs = dataset.sequences
    users = np.arange(seqs.num_users)
    neg = draw_negatives(seqs, users, 30, sampling, seed=3, item_counts=seqs.item_counts(), chunk=64)
    for u in users:
        row = neg.items[u]
        assert len(set(row.tolist())) == 30
        assert not set(row.tolist()) & set(seqs.user(u).tolist())
        assert row.min() >= 1 and row.max() <= seqs.num_items


def test_popularity_sampling_prefers_popular_items(data):
    dataset, _ = data
    seqs = dataset.sequences
    counts = seqs.item_counts()
    neg = draw_negatives(seqs, np.arange(seqs.num_users), 10, "popularity", 0, counts)
    uni = draw_negatives(seqs, np.arange(seqs.num_users), 10, "uniform", 0, counts)
    assert counts[neg.items].mean() > counts[uni.items].mean()


def test_negatives_are_stored_and_reused(tmp_path, data):
    dataset, split = data
    seqs, path = dataset.sequences, tmp_path / NEGATIVES_FILE
    first = load_or_draw_negatives(path, seqs, split.test.users, 20, "uniform", 5)
    assert path.is_file()
    again = load_or_draw_negatives(path, seqs, split.test.users, 20, "uniform", 5)
    np.testing.assert_array_equal(first.items, again.items)
    redrawn = draw_negatives(seqs, split.test.users, 20, "uniform", 5)  # same seed, same draw
    np.testing.assert_array_equal(first.items, redrawn.items)
    with pytest.raises(UserError, match="delete the file"):
        load_or_draw_negatives(path, seqs, split.test.users, 50, "uniform", 5)


def test_too_many_negatives_is_a_user_error(data):
    dataset, split = data
    with pytest.raises(UserError, match="lower it"):
        draw_negatives(dataset.sequences, split.test.users, 79, "uniform", 0)


@pytest.mark.parametrize("make_model", [bert4rec, sasrec])
@pytest.mark.parametrize("protocol", ["full", "sampled"])
def test_results_do_not_depend_on_batch_size(data, make_model, protocol):
    torch.manual_seed(0)
    dataset, split = data
    model = make_model(dataset.num_items, hidden=16, layers=1, max_len=10).eval()
    negatives = draw_negatives(dataset.sequences, split.test.users, 25, "uniform", 0) if protocol == "sampled" else None
    results = [evaluate(model_scorer(model), split.test, model.max_len, model.mask_token, (1, 5, 10), batch_size=b, negatives=negatives)
               for b in (7, 64, 1000)]
    assert results[0] == results[1] == results[2]
    assert results[0]["hr@10"] > 0


def test_sampled_beats_full_for_the_same_model(data):
    torch.manual_seed(0)
    dataset, split = data
    model = bert4rec(dataset.num_items, hidden=16, layers=1, max_len=10).eval()
    negatives = draw_negatives(dataset.sequences, split.test.users, 20, "uniform", 0)
    full = evaluate(model_scorer(model), split.test, model.max_len, model.mask_token, (10,))
    sampled = evaluate(model_scorer(model), split.test, model.max_len, model.mask_token, (10,), negatives=negatives)
    assert sampled["hr@10"] > full["hr@10"]
    assert "coverage@10" in full and "coverage@10" not in sampled
