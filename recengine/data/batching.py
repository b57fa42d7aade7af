"""Vectorised batching: left-padded windows and cloze masking, no per-sample Python loop.

All randomness comes from generators seeded by (seed, epoch, batch), so any batch of any
epoch can be rebuilt exactly: resuming mid-epoch needs no saved data-loader state.

Batches are built on the host (a few small tensor ops) and copied to the device from
pinned memory without blocking, so the training step never waits on the host and the host
never waits on the device: the trimmed length and the number of masked positions are
known on the host for free. Two things keep the device from doing wasted work:
- each batch is trimmed to the smallest of a few fixed lengths (``trim_lengths``) that
  holds its longest window; padding is on the left, so trimming drops only padding and
  the model (which places positions from the right) computes the same thing;
- the masked positions come as a flat index list padded to a size from a coarse grid
  (``mask_budget``), so the loss gathers them with no host sync and few distinct shapes.
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
    tokens: torch.Tensor, mask_prob: float, mask_token: int, generator: torch.Generator, mask_last: bool = True,
    last_only_share: float = 0.0, random_share: float = 0.0, keep_share: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT4Rec's cloze task: replace a random share of items by [MASK].

    Returns (inputs, labels); labels hold the original item at masked positions and PAD
    elsewhere. With ``mask_last`` the final item is always masked, which is exactly the
    next-item task the model is evaluated on. A ``last_only_share`` of the rows mask their
    last item alone (BERT4Rec paper, section 3.6): their context is as clean as at test time,
    where no other item is masked. BERT's 80/10/10: a ``random_share`` of the masked items
    (the always-masked last one excepted: at test time it is a [MASK]) is shown as a random
    item and a ``keep_share`` as itself, still with the original item as the target, so the
    model cannot take every unmasked-looking item as given.
    """
    real = tokens != PAD
    masked = (torch.rand(tokens.shape, generator=generator, device=tokens.device) < mask_prob) & real
    if last_only_share > 0:  # drawn only when asked, so the default keeps the masks it always had
        last_only = torch.rand(tokens.shape[0], generator=generator, device=tokens.device) < last_only_share
        masked[last_only] = False
    if mask_last:
        masked[:, -1] |= real[:, -1]
    inputs = torch.where(masked, mask_token, tokens)
    labels = torch.where(masked, tokens, PAD)
    if random_share > 0 or keep_share > 0:  # drawn only when asked, like last_only_share
        shown = masked.clone()
        if mask_last:
            shown[:, -1] = False
        u = torch.rand(tokens.shape, generator=generator, device=tokens.device)
        random_items = torch.randint(1, mask_token, tokens.shape, generator=generator, device=tokens.device)
        inputs = torch.where(shown & (u < keep_share), tokens, inputs)
        inputs = torch.where(shown & (u >= keep_share) & (u < keep_share + random_share), random_items, inputs)
    return inputs, labels


IGNORE = -100  # target of a padding slot among the masked positions (recengine.loss.IGNORE)


def trim_lengths(max_len: int) -> tuple[int, ...]:
    """The lengths batches are trimmed to: 8, 16, 24, 32, then about x1.25 each time (40, 56, 72,
    96, 120, ...), all multiples of 8 (matmul tiles), below ``max_len``, and ``max_len`` itself.

    Few lengths mean few shapes to compile and record as CUDA graphs; fine steps at the short
    end matter because real histories are short (Electronics: mean 9), so with
    ``length_grouping`` most batches trim to 8 or 16 of 50 positions. A length within an
    eighth of ``max_len`` is dropped: it would save little and cost a shape."""
    lengths, n = [8, 16, 24, 32], 32
    while n < max_len:
        n = -(-(n * 5 // 4) // 8) * 8
        lengths.append(n)
    return tuple(n for n in lengths if n < max_len - max_len // 8) + (max_len,)


def mask_budget(count: int) -> int:
    """Slots for ``count`` masked positions: rounded up on a grid of about 1/4 of a power of two,
    so batches of one shape reuse one or two sizes (few recompilations) and waste < 25%."""
    step = max(8, 1 << max(count.bit_length() - 3, 0))
    return max(step, -(-count // step) * step)


@dataclass
class Batch:
    inputs: torch.Tensor  # [B, T] item ids with [MASK] tokens, T <= max_len (trimmed left padding)
    labels: torch.Tensor  # [B, T] original item at masked positions, PAD elsewhere
    positions: torch.Tensor | None = None  # [K] flat indices into inputs.view(-1) of masked positions, padded
    targets: torch.Tensor | None = None  # [K] label at each of those positions, IGNORE in padding slots
    # Data-parallel ranks only (None on one process): this rank's masked count / (global count / ranks).
    # The loss (a mean over this rank's slots) times it, averaged over ranks by DDP/FSDP2, is the global batch's mean.
    loss_scale: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.inputs.shape[0]


def trim(inputs: torch.Tensor, labels: torch.Tensor, lengths: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop leading all-padding columns down to the smallest of ``lengths`` that keeps every item."""
    longest = int((inputs != PAD).sum(dim=1).max()) if inputs.numel() else 0
    keep = next((n for n in lengths if n >= longest), inputs.shape[1])
    # Contiguous: a compiled step guards on strides, and a view with the untrimmed row stride
    # would compile a second graph beside the one for untrimmed (contiguous) batches.
    return inputs[:, -keep:].contiguous(), labels[:, -keep:].contiguous()


def masked_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, targets) of the masked slots of ``labels``, padded to ``mask_budget``."""
    flat = labels.reshape(-1)
    found = torch.nonzero(flat != PAD).squeeze(1)
    size = mask_budget(len(found))
    positions = torch.zeros(size, dtype=torch.long)
    targets = torch.full((size,), IGNORE, dtype=torch.long)
    positions[: len(found)] = found
    targets[: len(found)] = flat[found]
    return positions, targets


class ClozeBatches:
    """Epochs of shuffled, masked training windows over ``seqs``, delivered on ``device``."""

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
        trim: bool = True,
        length_grouping: int = 0,
        last_only_share: float = 0.0,
        random_share: float = 0.0,
        keep_share: float = 0.0,
    ):
        self.device = torch.device(device)
        # Built on the host; see the module docstring.
        self.items = torch.from_numpy(seqs.items)
        self.starts = torch.from_numpy(seqs.offsets[:-1])
        self.lengths = torch.from_numpy(seqs.lengths)
        self.trim_lengths = trim_lengths(max_len) if trim else (max_len,)
        self.length_grouping, self.last_only_share = length_grouping, last_only_share
        self.random_share, self.keep_share = random_share, keep_share
        self.num_users = seqs.num_users
        self.mask_token = seqs.num_items + 1
        self.max_len, self.batch_size = max_len, batch_size
        self.mask_prob, self.mask_last, self.window, self.seed = mask_prob, mask_last, window, seed
        self.rank, self.world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> None:
        """Deliver only data-parallel rank ``rank``'s rows of each global batch (see `batch`)."""
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return math.ceil(self.num_users / self.batch_size)

    def _generator(self, *parts: int) -> torch.Generator:
        return torch.Generator().manual_seed(_seed(self.seed, *parts))

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _group_by_length(self, order: torch.Tensor, ends: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        # Sort users by window length inside pools of `length_grouping` batches, then shuffle
        # the batches: similar lengths share a batch, so trimming removes most padding.
        pool = self.length_grouping * self.batch_size
        window = (ends - self.starts).clamp(max=self.max_len)[order]
        parts = [order[lo : lo + pool][torch.argsort(window[lo : lo + pool], stable=True)] for lo in range(0, len(order), pool)]
        order = torch.cat(parts)
        batches = list(order.split(self.batch_size))
        return torch.cat([batches[i] for i in torch.randperm(len(batches), generator=g).tolist()])

    def _window_ends(self, g: torch.Generator) -> torch.Tensor:
        if self.window == "last":
            return self.starts + self.lengths
        # "random": a random window end per user and epoch, so long histories are seen whole over
        # epochs. "prefix": any end from the second item on, so the always-masked last item of the
        # window is a next-item target at every position over epochs (short histories have only a
        # few cloze targets each; next-item models train on every prefix).
        shortest = self.lengths.clamp(max=2 if self.window == "prefix" else self.max_len)
        r = torch.rand(self.num_users, generator=g)
        return self.starts + shortest + (r * (self.lengths - shortest + 1)).long().clamp(max=self.lengths - shortest)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        g = self._generator(epoch)
        order = torch.randperm(self.num_users, generator=g)
        ends = self._window_ends(g)
        if self.length_grouping:
            order = self._group_by_length(order, ends, g)
        for b in range(start_batch, len(self)):
            yield self.batch(order[b * self.batch_size : (b + 1) * self.batch_size], ends, epoch, b)

    def label(self, tokens: torch.Tensor, epoch: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of the training task: the cloze task here."""
        return cloze_mask(tokens, self.mask_prob, self.mask_token, self._generator(epoch, b), self.mask_last,
                          self.last_only_share, self.random_share, self.keep_share)

    def batch(self, users: torch.Tensor, ends: torch.Tensor, epoch: int, b: int) -> Batch:
        tokens = gather_windows(self.items, self.starts[users], ends[users], self.max_len)
        inputs, labels = self.label(tokens, epoch, b)
        scale = None
        if self.world_size > 1:
            inputs, labels, scale = self._my_rows(inputs, labels)
        inputs, labels = trim(inputs, labels, self.trim_lengths)
        positions, targets = masked_positions(labels)
        tensors = (inputs, labels, positions, targets, scale)
        return Batch(*(self._to_device(t) if t is not None else None for t in tensors))

    def _my_rows(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's contiguous rows of the global batch, and its loss scale.

        The global batch is built and masked whole first, so the data order and the masks never
        depend on the number of ranks; only the slicing does. Counts are known here on the host,
        so normalising by the global masked count needs no collective and no device sync."""
        n, rank, world = len(inputs), self.rank, self.world_size
        lo, hi = n * rank // world, n * (rank + 1) // world
        total = int((labels != PAD).sum())
        mine_inputs, mine_labels = inputs[lo:hi], labels[lo:hi]
        if hi == lo:  # fewer rows than ranks (a short last batch): one row with nothing to predict keeps the step collective
            mine_inputs, mine_labels = inputs[:1], torch.full_like(labels[:1], PAD)
        local = int((mine_labels != PAD).sum())
        return mine_inputs, mine_labels, torch.tensor(local * world / max(total, 1), dtype=torch.float32)
