"""Vectorised batching: left-padded windows and cloze masking, no per-sample Python loop.

All randomness comes from generators seeded by (seed, epoch, batch), so any batch of any
epoch can be rebuilt exactly: resuming mid-epoch needs no saved data-loader state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from recengine.data.sequences import PAD, Sequences


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)


def gather_windows(items: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, max_len: int) -> torch.Tensor:
    """Left-padded windows ``items[max(start, end - max_len):end]`` as a [B, max_len] int64 tensor."""
    idx = ends[:, None] - max_len + torch.arange(max_len, device=items.device)[None, :]
    valid = idx >= starts[:, None]
    return torch.where(valid, items[idx.clamp(min=0)].long(), PAD)


def cloze_mask(
    tokens: torch.Tensor, mask_prob: float, mask_token: int, generator: torch.Generator, mask_last: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT4Rec's cloze task: replace a random share of items by [MASK].

    Returns (inputs, labels); labels hold the original item at masked positions and PAD
    elsewhere. With ``mask_last`` the final item is always masked, which is exactly the
    next-item task the model is evaluated on.
    """
    real = tokens != PAD
    masked = (torch.rand(tokens.shape, generator=generator, device=tokens.device) < mask_prob) & real
    if mask_last:
        masked[:, -1] |= real[:, -1]
    inputs = torch.where(masked, mask_token, tokens)
    labels = torch.where(masked, tokens, PAD)
    return inputs, labels


@dataclass
class Batch:
    inputs: torch.Tensor  # [B, L] item ids with [MASK] tokens
    labels: torch.Tensor  # [B, L] original item at masked positions, PAD elsewhere

    def __len__(self) -> int:
        return self.inputs.shape[0]


class ClozeBatches:
    """Epochs of shuffled, masked training windows over ``seqs``, built on ``device``."""

    def __init__(
        self,
        seqs: Sequences,
        max_len: int,
        batch_size: int,
        mask_prob: float,
        mask_last: bool = True,
        window: str = "random",
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.device = torch.device(device)
        self.items = torch.from_numpy(seqs.items).to(self.device)
        self.starts = torch.from_numpy(seqs.offsets[:-1]).to(self.device)
        self.lengths = torch.from_numpy(seqs.lengths).to(self.device)
        self.num_users = seqs.num_users
        self.mask_token = seqs.num_items + 1
        self.max_len, self.batch_size = max_len, batch_size
        self.mask_prob, self.mask_last, self.window, self.seed = mask_prob, mask_last, window, seed

    def __len__(self) -> int:
        return math.ceil(self.num_users / self.batch_size)

    def _generator(self, *parts: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(_seed(self.seed, *parts))

    def _window_ends(self, g: torch.Generator) -> torch.Tensor:
        if self.window == "last":
            return self.starts + self.lengths
        # A random window end per user and epoch, so long histories are seen whole over epochs.
        shortest = self.lengths.clamp(max=self.max_len)
        r = torch.rand(self.num_users, generator=g, device=self.device)
        return self.starts + shortest + (r * (self.lengths - shortest + 1)).long().clamp(max=self.lengths - shortest)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        g = self._generator(epoch)
        order = torch.randperm(self.num_users, generator=g, device=self.device)
        ends = self._window_ends(g)
        for b in range(start_batch, len(self)):
            users = order[b * self.batch_size : (b + 1) * self.batch_size]
            tokens = gather_windows(self.items, self.starts[users], ends[users], self.max_len)
            inputs, labels = cloze_mask(tokens, self.mask_prob, self.mask_token, self._generator(epoch, b), self.mask_last)
            yield Batch(inputs, labels)
