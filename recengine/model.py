"""The contract between the engine and model plugins.

A model plugin's factory returns a ``SequenceModel``: an encoder over item-id sequences
(0 = padding, 1..num_items = items, num_items + 1 = [MASK]) plus an output layer that
scores the whole catalog. The engine never asks for a [batch, length, catalog] tensor:
it takes hidden states at the positions it needs and scores only those.
"""

from __future__ import annotations

import torch
from torch import nn


class SequenceModel(nn.Module):
    num_items: int
    max_len: int
    # How it is trained (recengine/tasks.py). In both tasks the hidden state at position t
    # predicts the item at t: "cloze" models see [MASK] there; "next_item" (causal) models
    # see only the items before t, so they ignore the [MASK] that evaluation appends.
    training_task: str = "cloze"

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, L] item ids -> [B, L, H] hidden states."""
        raise NotImplementedError

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, H] hidden states at chosen positions -> [N, H'] output queries."""
        raise NotImplementedError

    def output_embedding(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight [num_items + 1, H'], bias [num_items + 1] or None); row 0 is padding."""
        raise NotImplementedError

    @property
    def mask_token(self) -> int:
        return self.num_items + 1


def item_scores(model: SequenceModel, hidden: torch.Tensor) -> torch.Tensor:
    """Scores over the catalog for [N, H] hidden states; column 0 (padding) is -inf."""
    weight, bias = model.output_embedding()
    scores = model.project(hidden) @ weight.t()
    if bias is not None:
        scores = scores + bias
    scores = scores.float()
    scores[:, 0] = float("-inf")
    return scores


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
