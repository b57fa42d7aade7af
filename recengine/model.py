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

    def input_embedding(self) -> nn.Embedding | None:
        """The item table the encoder looks up with the input ids and nothing else, or None.

        Only such a table's gradient is zero outside the rows of the batch's ids (and its
        padding row), which lets data-parallel training exchange just those rows
        (``distributed.input_embedding_grads = "touched-rows"``). A table tied to the output
        layer gets a gradient in every row, so a tied model returns None (the default)."""
        return None

    @property
    def mask_token(self) -> int:
        return self.num_items + 1


ALIGN = 64  # catalog columns are padded to a multiple of this for the output matmul


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a matmul in (the tensor's own dtype outside autocast)."""
    device = tensor.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else tensor.dtype


def output_logits(queries: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``queries @ weight.T + bias`` as [N, C] with C = rows of ``weight`` rounded up to ``ALIGN``;
    the extra columns are -inf. Why: a catalog such as 160,055 rows makes the logits' row
    stride odd, which forces cuBLAS onto slow unaligned kernels (measured: ~5x slower on H100);
    padding the weight once (folded into the dtype cast autocast would do anyway) and fusing
    the bias into one ``addmm`` keeps the matmul on the fast path."""
    dtype = compute_dtype(queries)
    rows, hidden = weight.shape
    pad = -rows % ALIGN
    w = weight.to(dtype)
    b = bias.to(dtype) if bias is not None else w.new_zeros(rows)
    if pad:
        w = torch.cat([w, w.new_zeros(pad, hidden)])
        b = torch.cat([b, b.new_full((pad,), float("-inf"))])
    with torch.autocast(queries.device.type, enabled=False):
        return torch.addmm(b, queries.to(dtype), w.t())


def item_scores(model: SequenceModel, hidden: torch.Tensor) -> torch.Tensor:
    """fp32 scores over the catalog for [N, H] hidden states; column 0 (padding) is -inf."""
    weight, bias = model.output_embedding()
    scores = output_logits(model.project(hidden), weight, bias)[:, : weight.shape[0]].float()
    scores[:, 0] = float("-inf")
    return scores


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
