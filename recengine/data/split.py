"""Leave-one-out split, as in the BERT4Rec and SASRec papers.

For a user with sequence s (length n >= 3):
- train on s[:-2];
- validate: input s[:-2], target s[-2];
- test: input s[:-1] (the validation item included), target s[-1].
Users with fewer than 3 interactions are not evaluated; their whole sequence is training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recengine.data.sequences import Sequences

MIN_EVAL_LENGTH = 3


@dataclass(frozen=True)
class EvalSet:
    inputs: Sequences  # each user's history fed to the model (and excluded from ranking)
    targets: np.ndarray  # int64 [num_users], the held-out item
    users: np.ndarray  # int64 index of each row in the original dataset

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, rows: np.ndarray) -> "EvalSet":
        return EvalSet(self.inputs.select(rows), self.targets[rows], self.users[rows])


@dataclass(frozen=True)
class LeaveOneOut:
    train: Sequences
    valid: EvalSet
    test: EvalSet


def leave_one_out(seqs: Sequences) -> LeaveOneOut:
    lengths = seqs.lengths
    evaluated = np.flatnonzero(lengths >= MIN_EVAL_LENGTH)
    held_out = np.where(lengths >= MIN_EVAL_LENGTH, 2, 0)
    train = seqs.drop_last(held_out)
    train = train.select(np.flatnonzero(train.lengths > 0))
    ev = seqs.select(evaluated)
    valid = EvalSet(ev.drop_last(2), ev.last(2).astype(np.int64), evaluated)
    test = EvalSet(ev.drop_last(1), ev.last(1).astype(np.int64), evaluated)
    return LeaveOneOut(train, valid, test)
