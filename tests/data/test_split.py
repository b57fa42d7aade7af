import numpy as np
import pytest

from recengine.data.sequences import Dataset, Sequences
from recengine.data.split import leave_one_out, make_split, temporal_split
from recengine.errors import UserError


def test_leave_one_out_recall_is_hr_target():
    split = leave_one_out(Sequences.from_lists([[1, 2, 3, 4], [5, 6]], num_items=6))
    assert split.test.targets.tolist() == [4]
    assert split.test.all_held_out.to_lists() == [[4]]


def test_temporal_split_by_hand():
    seqs = Sequences.from_lists([[1, 2, 3, 4, 5], [6, 7], [8, 9, 1]], num_items=9)
    times = np.array([1, 2, 11, 12, 21, 1, 25, 15, 16, 17], dtype=np.int64)
    split = temporal_split(seqs, times, valid_cutoff=10, test_cutoff=20)
    assert split.train.to_lists() == [[1, 2], [6]]  # user 2 starts after the validation cut-off
    assert split.valid.users.tolist() == [0]
    assert split.valid.inputs.to_lists() == [[1, 2]]
    assert split.valid.held_out.to_lists() == [[3, 4]]
    assert split.valid.targets.tolist() == [3]
    assert split.test.users.tolist() == [0, 1]
    assert split.test.inputs.to_lists() == [[1, 2, 3, 4], [6]]
    assert split.test.held_out.to_lists() == [[5], [7]]
    sub = split.test.subset(np.array([1]))
    assert sub.held_out.to_lists() == [[7]] and sub.targets.tolist() == [7]


def test_temporal_split_without_timestamps_is_a_clear_error():
    dataset = Dataset(Sequences.from_lists([[1, 2, 3]], num_items=3))
    with pytest.raises(UserError, match="needs timestamps"):
        make_split(dataset, "temporal")


def test_temporal_split_from_quantiles():
    seqs = Sequences.from_lists([[1, 2, 3, 4], [2, 3, 4, 1]], num_items=4)
    dataset = Dataset(seqs, timestamps=np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=np.int64))
    split = make_split(dataset, "temporal", (0.25, 0.75))
    assert len(split.train.items) + sum(split.valid.held_out.lengths) <= 8
    assert len(split.test) >= 1


def test_unsorted_times_are_rejected():
    seqs = Sequences.from_lists([[1, 2]], num_items=2)
    with pytest.raises(UserError, match="non-decreasing"):
        temporal_split(seqs, np.array([5, 1]), 2, 3)
