"""Ranking metrics for one held-out target per user.

Ranks are 0-based and pessimistic: every other item scoring *at least* as high as the
target is counted ahead of it, so ties count against the target and a constant scorer
gets no credit.
"""

from __future__ import annotations

import torch

DEFAULT_KS = (1, 5, 10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based pessimistic rank of ``targets[i]`` within ``scores[i]``."""
    target_scores = scores.gather(1, targets[:, None])
    return (scores >= target_scores).sum(dim=1) - 1


def metric_sums(ranks: torch.Tensor, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """Per-metric sums over a batch; divide by the user count at the end."""
    ranks = ranks.double()
    sums = {"mrr": (1.0 / (ranks + 1)).sum().item()}
    for k in ks:
        hit = ranks < k
        sums[f"hr@{k}"] = hit.sum().item()
        sums[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 2), 0.0).sum().item()
    return sums

