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
