"""Raw interactions -> chronological user sequences with dense item ids. All steps are vectorised.

Order of the steps (each documented in docs/datasets.md):

1. rating threshold: keep ratings >= ``min_rating``;
2. duplicate (user, item) pairs: ``keep`` all, or keep the ``first`` / ``last`` in time;
3. chronological order: stable sort by (user, time); interactions with the same time keep
   their order in the file (the documented tie-break). Formats without times ("user item")
   are already chronological, so file order is the order. (The sort runs after the filters
   below unless step 2 needs it: they keep row order, so the result is the same.)
4. iterative k-core: drop users and items with fewer than ``k_core`` interactions, repeated
   until nothing changes;
5. minimum sequence length: drop users with fewer than ``min_length`` interactions;
6. dense ids 1..num_items in the order of the original ids; ``item_ids`` keeps the originals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recengine.data.formats import Interactions
from recengine.data.sequences import Dataset, Sequences
from recengine.errors import UserError


@dataclass(frozen=True)
class Preprocessing:
    min_rating: float | None = None
    k_core: int = 0
    duplicates: str = "keep"  # keep | first | last
    min_length: int = 1


@dataclass
class Report:
    """How many interactions each step removed, for `recengine data prepare`."""

    steps: list[tuple[str, int]] = field(default_factory=list)
    k_core_rounds: int = 0


def _filter(x: Interactions, keep: np.ndarray) -> Interactions:
    return Interactions(x.users[keep], x.items[keep], x.item_names,
                        None if x.ratings is None else x.ratings[keep],
                        None if x.times is None else x.times[keep], x.time_scale, x.skipped)


def chronological_order(users: np.ndarray, times: np.ndarray | None) -> np.ndarray:
    """Row order by user, then time; ties keep file order (np.lexsort is stable)."""
    if times is None:
        return np.argsort(users, kind="stable")
    low, span = int(times.min(initial=0)), int(times.max(initial=0)) - int(times.min(initial=0)) + 1
    if int(users.max(initial=0)) < (2**62) // span:  # one int64 key sorts about twice as fast as two
        return np.argsort(users * span + (times - low), kind="stable")
    return np.lexsort((times, users))


def k_core(users: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Mask of interactions in the k-core (users and items with >= k interactions), and the rounds it took."""
    keep = np.ones(len(users), dtype=bool)
    rounds = 0
    while k > 1:
        rounds += 1
        u, i = users[keep], items[keep]
        ok = (np.bincount(u)[u] >= k) & (np.bincount(i)[i] >= k)
        if ok.all():
            break
        keep[np.flatnonzero(keep)[~ok]] = False
    return keep, rounds


def first_occurrences(users: np.ndarray, items: np.ndarray, last: bool = False) -> np.ndarray:
    """Mask keeping one row per (user, item): the first (or last) in the current row order."""
    key = users * (int(items.max(initial=0)) + 1) + items
    if last:
        key = key[::-1]
    _, index = np.unique(key, return_index=True)
    keep = np.zeros(len(key), dtype=bool)
    keep[index] = True
    return keep[::-1] if last else keep


def preprocess(x: Interactions, options: Preprocessing, source: str = "dataset") -> tuple[Dataset, Report]:
    report = Report()

    def step(name: str, keep: np.ndarray) -> None:
        nonlocal x
        report.steps.append((name, int(len(keep) - keep.sum())))
        if not keep.all():
            x = _filter(x, keep)

    if options.min_rating is not None:
        if x.ratings is None:
            raise UserError(f"{source}: this format has no ratings; remove dataset.min_rating")
        step(f"rating < {options.min_rating:g}", x.ratings >= options.min_rating)
    # The filters keep row order and k-core does not depend on it, so sorting waits until after
    # them (fewer rows), unless the duplicate policy needs time order first.
    if options.duplicates != "keep":
        x = _filter(x, chronological_order(x.users, x.times))
        step(f"duplicate (user, item), kept {options.duplicates}",
             first_occurrences(x.users, x.items, last=options.duplicates == "last"))
    if options.k_core > 1:
        keep, report.k_core_rounds = k_core(x.users, x.items, options.k_core)
        step(f"{options.k_core}-core ({report.k_core_rounds} rounds)", keep)
    if options.min_length > 1:
        step(f"users shorter than {options.min_length}", np.bincount(x.users)[x.users] >= options.min_length)
    if len(x) == 0:
        raise UserError(f"{source}: no interactions left after filtering (min_rating={options.min_rating}, "
                        f"k_core={options.k_core}, min_length={options.min_length}); relax these options")

    if options.duplicates == "keep":
        x = _filter(x, chronological_order(x.users, x.times))
    present, dense = np.unique(x.items, return_inverse=True)  # codes are in original-id order
    item_ids = [""] + [x.item_names[i] for i in present]
    _, lengths = np.unique(x.users, return_counts=True)  # rows are grouped by user already
    sequences = Sequences.from_lengths((dense + 1).astype(np.int32), lengths, len(present))
    timestamps = None if x.times is None else (x.times // x.time_scale).astype(np.int64)
    return Dataset(sequences, item_ids, timestamps), report
