import math

import torch

from recengine.metrics import metric_sums, target_ranks


def test_ranks_count_ties_against_the_target():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.5, 0.1], [0.0, 0.2, 0.2, 0.2, 0.2]])
    ranks = target_ranks(scores, torch.tensor([2, 4]))
    # row 0: 0.9 beats it, 0.5 ties it -> rank 2; row 1: three ties -> rank 3
    assert ranks.tolist() == [2, 3]


def test_metrics_by_hand():
    ranks = torch.tensor([0, 2, 9, 10, 25])
    sums = metric_sums(ranks, ks=(1, 10))
    assert sums["hr@1"] == 1
    assert sums["hr@10"] == 3
    assert math.isclose(sums["ndcg@10"], 1 + 1 / math.log2(4) + 1 / math.log2(11))
    assert math.isclose(sums["ndcg@1"], 1.0)
    assert math.isclose(sums["mrr"], 1 + 1 / 3 + 1 / 10 + 1 / 11 + 1 / 26)
