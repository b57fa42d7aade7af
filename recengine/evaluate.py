"""Full-catalog evaluation, batched on the device with no per-user Python loop.

Each user's input is the last ``max_len - 1`` items of their history followed by [MASK];
the model's scores at that final position rank the whole catalog. Items in the user's
history are excluded from the ranking by default (``exclude_history``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from recengine.data.batching import gather_windows
from recengine.data.split import EvalSet
from recengine.metrics import DEFAULT_KS, metric_sums, target_ranks
from recengine.model import SequenceModel, item_scores

Scorer = Callable[[torch.Tensor], torch.Tensor]  # [B, L] tokens -> [B, num_items + 1] scores


def model_scorer(model: SequenceModel) -> Scorer:
    def score(tokens: torch.Tensor) -> torch.Tensor:
        return item_scores(model, model.encode(tokens)[:, -1])

    return score


def popularity_scorer(item_counts: np.ndarray, device: torch.device | str = "cpu") -> Scorer:
    """The popularity baseline: every user gets the catalog ranked by training counts."""
    popularity = torch.from_numpy(item_counts.astype(np.float32)).to(device)
    popularity[0] = float("-inf")
    return lambda tokens: popularity.expand(tokens.shape[0], -1).clone()


@torch.no_grad()
def evaluate(
    scorer: Scorer,
    eval_set: EvalSet,
    max_len: int,
    mask_token: int,
    ks: tuple[int, ...] = DEFAULT_KS,
    exclude_history: bool = True,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] = lambda n: None,
) -> dict[str, float]:
    seqs = eval_set.inputs
    items = torch.from_numpy(seqs.items).to(device)
    offsets = torch.from_numpy(seqs.offsets).to(device)
    targets = torch.from_numpy(eval_set.targets).to(device)
    totals: dict[str, float] = {}
    n = len(eval_set)
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        tokens = gather_windows(items, offsets[lo:hi], offsets[lo + 1 : hi + 1], max_len - 1)
        tokens = torch.cat([tokens, tokens.new_full((hi - lo, 1), mask_token)], dim=1)
        scores = scorer(tokens)
        if exclude_history:
            lengths = offsets[lo + 1 : hi + 1] - offsets[lo:hi]
            rows = torch.repeat_interleave(torch.arange(hi - lo, device=device), lengths)
            scores[rows, items[offsets[lo] : offsets[hi]].long()] = float("-inf")
        for name, value in metric_sums(target_ranks(scores, targets[lo:hi]), ks).items():
            totals[name] = totals.get(name, 0.0) + value
        on_batch(hi - lo)
    return {name: value / max(n, 1) for name, value in totals.items()}
