"""Next-item batches for causal models (SASRec): every position predicts its own item.

A causal model's hidden state at position t summarises only the items before t (see
``SequenceModel.training_task``), so the labels are the window itself: no [MASK] tokens,
and every real position is a training target except the first of each window, which has
no context to predict it from.
"""

from __future__ import annotations

import torch

from recengine.data.batching import ClozeBatches
from recengine.data.sequences import PAD


def next_item_labels(tokens: torch.Tensor) -> torch.Tensor:
    """Labels for a left-padded window: the items themselves, PAD at padding and the first item."""
    real = tokens != PAD
    has_context = torch.nn.functional.pad(real[:, :-1], (1, 0), value=False)
    return torch.where(real & has_context, tokens, PAD)


class NextItemBatches(ClozeBatches):
    """The same shuffled, seeded windows as ``ClozeBatches``, labelled for next-item training."""

    def __init__(self, seqs, max_len: int, batch_size: int, window: str = "random", seed: int = 0, device="cpu", length_grouping: int = 0):
        super().__init__(seqs, max_len, batch_size, mask_prob=0.5, mask_last=True, window=window, seed=seed, device=device,
                         length_grouping=length_grouping)

    def label(self, tokens: torch.Tensor, epoch: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        return tokens, next_item_labels(tokens)
