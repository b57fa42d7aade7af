"""User sequences held as CSR: one int32 array of item ids plus int64 offsets.

Item ids are dense: 1..num_items. 0 is padding; ``num_items + 1`` is the [MASK] token of
cloze models. Never a Python list of lists: 730k users x ~9 items stays ~30 MB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = 0


@dataclass(frozen=True)
class Sequences:
    items: np.ndarray  # int32 [nnz], chronological within each user
    offsets: np.ndarray  # int64 [num_users + 1]
    num_items: int

    def __post_init__(self):
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0:
            raise ValueError("offsets must be a 1-D array starting at 0")
        if self.offsets[-1] != len(self.items):
            raise ValueError("offsets[-1] must equal len(items)")

    @classmethod
    def from_lists(cls, lists: list[list[int]], num_items: int | None = None) -> "Sequences":
        """Small helper for tests and hand-made data (not for large inputs)."""
        lengths = np.array([len(s) for s in lists], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.concatenate([np.asarray(s, dtype=np.int32) for s in lists]) if lists else np.zeros(0, np.int32)
        n = int(items.max(initial=0)) if num_items is None else num_items
        return cls(items.astype(np.int32), offsets, n)

    @classmethod
    def from_lengths(cls, items: np.ndarray, lengths: np.ndarray, num_items: int) -> "Sequences":
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(np.ascontiguousarray(items, dtype=np.int32), offsets, num_items)

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return self.num_users

    def user(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u] : self.offsets[u + 1]]

    def to_lists(self) -> list[list[int]]:
        return [self.user(u).tolist() for u in range(self.num_users)]

    def positions(self) -> np.ndarray:
        """Position of every interaction within its user's sequence (0-based)."""
        starts = np.repeat(self.offsets[:-1], self.lengths)
        return np.arange(len(self.items), dtype=np.int64) - starts

    def select(self, users: np.ndarray) -> "Sequences":
        """The sequences of ``users`` (an index array), in that order."""
        users = np.asarray(users, dtype=np.int64)
        lengths = self.lengths[users]
        starts = np.repeat(self.offsets[users], lengths)
        within = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return Sequences.from_lengths(self.items[starts + within], lengths, self.num_items)

    def drop_last(self, k: np.ndarray | int) -> "Sequences":
        """Every sequence without its last ``k`` items (``k`` per user or one number)."""
        lengths = self.lengths
        new_lengths = np.maximum(lengths - np.asarray(k, dtype=np.int64), 0)
        keep = self.positions() < np.repeat(new_lengths, lengths)
        return Sequences.from_lengths(self.items[keep], new_lengths, self.num_items)

    def last(self, k: int = 1) -> np.ndarray:
        """The k-th last item of every sequence (all sequences must be long enough)."""
        return self.items[self.offsets[1:] - k]

    def item_counts(self) -> np.ndarray:
        """Interactions per item id, indexed 0..num_items (index 0, padding, is 0)."""
        return np.bincount(self.items, minlength=self.num_items + 1)[: self.num_items + 1]


@dataclass
class Dataset:
    """What a dataset plugin returns: chronological sequences plus the original ids.

    ``item_ids[i]`` is the original id (a string, e.g. an ASIN or movieId) of dense item ``i``;
    index 0 is the padding slot. ``None`` means the dense ids are the ids.
    """

    sequences: Sequences
    item_ids: list[str] | None = None
    timestamps: np.ndarray | None = None  # int64 seconds, aligned with sequences.items

    @property
    def num_items(self) -> int:
        return self.sequences.num_items
