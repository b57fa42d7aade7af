"""Ranking metrics, computed from exact integer ranks and hit counts.

The pessimistic convention, everywhere: every other candidate scoring *at least* as high
as an item is counted ahead of it. Ties therefore count against the target, and a
constant scorer gets no credit (HR@K = 0 for K < the number of candidates).

An item is "in the top K" exactly when its pessimistic rank is below K. Equivalently, its
score is *strictly greater* than the (K+1)-th largest score of its row, which is how
``topk_thresholds`` lets recall and coverage use one ``topk`` instead of a sort.

Metrics are computed at the end from per-user integers (ranks, hit counts), never from
per-batch float sums, so they are bit-identical for any evaluation batch size.
"""

from __future__ import annotations

import torch

DEFAULT_KS = (1, 5, 10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based pessimistic rank of ``targets[i]`` within ``scores[i]``."""
    target_scores = scores.gather(1, targets[:, None])
    return (scores >= target_scores).sum(dim=1, dtype=torch.int32).long() - 1  # int32 sums: ~2x faster on CPU


def sampled_ranks(scores: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """0-based pessimistic rank of each target among its own row of sampled ``negatives`` [B, N]."""
    target_scores = scores.gather(1, targets[:, None])
    return (scores.gather(1, negatives) >= target_scores).sum(dim=1)


def topk_thresholds(scores: torch.Tensor, max_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the ``max_k + 1`` largest scores per row, padded with -inf.

    ``values[:, k]`` is the (k+1)-th largest score: an item is in the pessimistic top K
    exactly when its score is strictly greater than ``values[:, K]``.
    """
    take = min(max_k + 1, scores.shape[1])
    values, indices = scores.topk(take, dim=1)
    if take < max_k + 1:
        pad = max_k + 1 - take
        values = torch.cat([values, values.new_full((len(values), pad), float("-inf"))], dim=1)
        indices = torch.cat([indices, indices.new_zeros((len(indices), pad))], dim=1)
    return values, indices


def metrics_from_ranks(ranks: torch.Tensor, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """HR@K, NDCG@K and MRR (means over users) from 0-based ranks of one target per user."""
    ranks = ranks.double()
    n = max(len(ranks), 1)
    out = {"mrr": ((1.0 / (ranks + 1)).sum() / n).item()}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = (hit.double().sum() / n).item()
        out[f"ndcg@{k}"] = (torch.where(hit, 1.0 / torch.log2(ranks + 2), 0.0).sum() / n).item()
    return out


def recall(hits: torch.Tensor, held_out: torch.Tensor) -> float:
    """Mean over users of (held-out items in the top K) / (held-out items)."""
    return ((hits.double() / held_out.double()).sum() / max(len(hits), 1)).item()


def coverage(recommended: torch.Tensor, num_items: int) -> float:
    """Share of the catalog (ids 1..num_items) in at least one user's pessimistic top K."""
    return recommended[1:].sum().item() / num_items

