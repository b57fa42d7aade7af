"""Hand-computed metric cases: pessimistic ties, recall, coverage."""

import math

import numpy as np
import pytest
import torch

from recengine.data.sequences import Sequences
from recengine.data.split import EvalSet
from recengine.evaluate import evaluate
from recengine.metrics import metrics_from_ranks, sampled_ranks, target_ranks


def test_ranks_count_ties_against_the_target():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.5, 0.1], [0.0, 0.2, 0.2, 0.2, 0.2]])
    ranks = target_ranks(scores, torch.tensor([2, 4]))
    # row 0: 0.9 beats it, 0.5 ties it -> rank 2; row 1: three ties -> rank 3
    assert ranks.tolist() == [2, 3]


def test_metrics_by_hand():
    ranks = torch.tensor([0, 2, 9, 10, 25])
    sums = {name: value * len(ranks) for name, value in metrics_from_ranks(ranks, ks=(1, 10)).items()}
    assert sums["hr@1"] == 1
    assert sums["hr@10"] == 3
    assert math.isclose(sums["ndcg@10"], 1 + 1 / math.log2(4) + 1 / math.log2(11))
    assert math.isclose(sums["ndcg@1"], 1.0)
    assert math.isclose(sums["mrr"], 1 + 1 / 3 + 1 / 10 + 1 / 11 + 1 / 26)


def test_ties_count_against_the_target():
    scores = torch.tensor([[-math.inf, 1.0, 1.0, 1.0, 0.5]])
    assert target_ranks(scores, torch.tensor([2])).item() == 2  # items 1 and 3 tie with it
    assert target_ranks(scores, torch.tensor([4])).item() == 3


def test_metrics_from_ranks_by_hand():
    m = metrics_from_ranks(torch.tensor([0, 2, 15]), ks=(1, 3, 10))
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["hr@3"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 16) / 3)


def test_sampled_rank_counts_ties_with_negatives():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.5, 0.1]])
    assert sampled_ranks(scores, torch.tensor([2]), torch.tensor([[3, 4]])).item() == 1
    assert sampled_ranks(scores, torch.tensor([1]), torch.tensor([[3, 4]])).item() == 0


def _fixed_scorer(table):
    def score(tokens):  # the score row is chosen by the user's last history item
        return table[tokens[:, -2]].clone()

    return score


def test_recall_and_coverage_by_hand():
    # catalog 1..5; user 0 history [1], user 1 history [2]; no history exclusion.
    table = torch.full((6, 6), 0.0)
    table[1] = torch.tensor([-math.inf, 0.1, 0.9, 0.8, 0.7, 0.0])  # user 0 ranks 2 > 3 > 4
    table[2] = torch.tensor([-math.inf, 0.9, 0.5, 0.5, 0.5, 0.0])  # user 1: 1, then a 3-way tie
    eval_set = EvalSet(
        inputs=Sequences.from_lists([[1], [2]], num_items=5),
        targets=np.array([3, 3]),
        users=np.array([0, 1]),
        held_out=Sequences.from_lists([[3, 5], [3]], num_items=5),
    )
    m = evaluate(_fixed_scorer(table), eval_set, max_len=3, mask_token=6, ks=(1, 2), exclude_history=False)
    # user 0: target 3 has rank 1; user 1: target 3 tied with 2 and 4 -> pessimistic rank 3.
    assert m["hr@2"] == 0.5 and m["hr@1"] == 0.0
    # recall@2: user 0 has 1 of its 2 held-out items (3) in its top 2; user 1 none.
    assert m["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    # coverage@2: user 0's top 2 = {2, 3}; user 1's top 2 is {1} plus a tie -> only {1}.
    assert m["coverage@2"] == pytest.approx(3 / 5)
    assert m["coverage@1"] == pytest.approx(2 / 5)


def test_constant_scorer_gets_nothing():
    eval_set = EvalSet(Sequences.from_lists([[1, 2], [3]], num_items=10), np.array([4, 5]), np.array([0, 1]))
    m = evaluate(lambda tokens: torch.zeros(len(tokens), 11), eval_set, max_len=4, mask_token=11, ks=(1, 5))
    assert m["hr@5"] == 0 and m["recall@5"] == 0 and m["coverage@5"] == 0
