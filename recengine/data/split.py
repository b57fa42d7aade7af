"""Train / validation / test splits.

Leave-one-out, as in the BERT4Rec and SASRec papers. For a user with sequence s (length n >= 3):
- train on s[:-2];
- validate: input s[:-2], target s[-2];
- test: input s[:-1] (the validation item included), target s[-1].
Users with fewer than 3 interactions are not evaluated; their whole sequence is training data.

Global temporal split, for data with timestamps: two cut-off times t_valid < t_test.
- train on every interaction before t_valid;
- validate: input = the interactions before t_valid, held out = those in [t_valid, t_test);
- test: input = the interactions before t_test (the validation period included),
  held out = those at or after t_test.
A user is evaluated on a split when they have at least one input and one held-out item.
The target (for HR, NDCG and MRR) is the first held-out item; Recall@K uses all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recengine.data.sequences import Dataset, Sequences
from recengine.errors import UserError

MIN_EVAL_LENGTH = 3


@dataclass(frozen=True)
class EvalSet:
    inputs: Sequences  # each user's history fed to the model (and excluded from full ranking)
    targets: np.ndarray  # int64 [num_users], the (first) held-out item
    users: np.ndarray  # int64 index of each row in the original dataset
    held_out: Sequences | None = None  # every held-out item, for Recall@K; None: the target alone

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def all_held_out(self) -> Sequences:
        if self.held_out is not None:
            return self.held_out
        return Sequences.from_lengths(self.targets, np.ones(len(self.targets), np.int64), self.inputs.num_items)

    def subset(self, rows: np.ndarray) -> "EvalSet":
        held_out = self.held_out.select(rows) if self.held_out is not None else None
        return EvalSet(self.inputs.select(rows), self.targets[rows], self.users[rows], held_out)


@dataclass(frozen=True)
class DataSplit:
    train: Sequences
    valid: EvalSet
    test: EvalSet


LeaveOneOut = DataSplit  # the name the first split gave this shape


def leave_one_out(seqs: Sequences) -> DataSplit:
    lengths = seqs.lengths
    evaluated = np.flatnonzero(lengths >= MIN_EVAL_LENGTH)
    held_out = np.where(lengths >= MIN_EVAL_LENGTH, 2, 0)
    train = seqs.drop_last(held_out)
    train = train.select(np.flatnonzero(train.lengths > 0))
    ev = seqs.select(evaluated)
    valid = EvalSet(ev.drop_last(2), ev.last(2).astype(np.int64), evaluated)
    test = EvalSet(ev.drop_last(1), ev.last(1).astype(np.int64), evaluated)
    return DataSplit(train, valid, test)


def _before(seqs: Sequences, timestamps: np.ndarray, cutoff: int) -> np.ndarray:
    """Per user, how many leading interactions happen before ``cutoff``."""
    user_of = np.repeat(np.arange(seqs.num_users), seqs.lengths)
    return np.bincount(user_of[timestamps < cutoff], minlength=seqs.num_users).astype(np.int64)


def _window_set(seqs: Sequences, keep_before: np.ndarray, held_until: np.ndarray) -> EvalSet:
    """Users with input items [0, keep_before) and held-out items [keep_before, held_until)."""
    users = np.flatnonzero((keep_before > 0) & (held_until > keep_before))
    sub = seqs.select(users)
    lengths = sub.lengths
    inputs = sub.drop_last(lengths - keep_before[users])
    window = sub.drop_last(lengths - held_until[users])
    held_out = Sequences.from_lengths(
        window.items[window.positions() >= np.repeat(keep_before[users], window.lengths)],
        held_until[users] - keep_before[users], seqs.num_items)
    return EvalSet(inputs, held_out.items[held_out.offsets[:-1]].astype(np.int64), users, held_out)


def temporal_split(seqs: Sequences, timestamps: np.ndarray, valid_cutoff: int, test_cutoff: int) -> DataSplit:
    """The global temporal split at two cut-off times (seconds); sequences must be chronological."""
    if timestamps is None:
        raise UserError("eval.split = \"temporal\" needs timestamps, and this dataset has none; "
                        "use eval.split = \"leave_one_out\" or a dataset with times")
    if len(timestamps) != len(seqs.items):
        raise UserError(f"the dataset has {len(timestamps)} timestamps for {len(seqs.items)} interactions; they must align")
    if valid_cutoff > test_cutoff:
        raise UserError(f"temporal split: the validation cut-off ({valid_cutoff}) is after the test cut-off ({test_cutoff})")
    starts = np.repeat(seqs.offsets[:-1], seqs.lengths)
    if np.any(np.diff(timestamps)[np.diff(starts) == 0] < 0):
        raise UserError("temporal split: timestamps must be non-decreasing within each user's sequence")
    before_valid = _before(seqs, timestamps, valid_cutoff)
    before_test = _before(seqs, timestamps, test_cutoff)
    train = seqs.drop_last(seqs.lengths - before_valid)
    train = train.select(np.flatnonzero(train.lengths > 0))
    valid = _window_set(seqs, before_valid, before_test)
    test = _window_set(seqs, before_test, seqs.lengths)
    return DataSplit(train, valid, test)


def cutoffs_at_quantiles(timestamps: np.ndarray, valid_quantile: float, test_quantile: float) -> tuple[int, int]:
    """Cut-off times that leave the given shares of all interactions before them."""
    valid, test = np.quantile(timestamps, [valid_quantile, test_quantile], method="higher")
    return int(valid), int(test)


def make_split(dataset: Dataset, kind: str = "leave_one_out", quantiles: tuple[float, float] = (0.8, 0.9)) -> DataSplit:
    """The split a recipe's ``eval.split`` names."""
    if kind == "leave_one_out":
        return leave_one_out(dataset.sequences)
    if dataset.timestamps is None:
        return temporal_split(dataset.sequences, None, 0, 0)  # raises the clear "no timestamps" error
    return temporal_split(dataset.sequences, dataset.timestamps, *cutoffs_at_quantiles(dataset.timestamps, *quantiles))
