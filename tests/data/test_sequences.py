import numpy as np

from recengine.data import Sequences, leave_one_out


def test_csr_round_trip_and_select():
    seqs = Sequences.from_lists([[1, 2, 3], [4], [5, 6]], num_items=6)
    assert seqs.items.dtype == np.int32 and seqs.offsets.dtype == np.int64
    assert seqs.to_lists() == [[1, 2, 3], [4], [5, 6]]
    assert seqs.select(np.array([2, 0])).to_lists() == [[5, 6], [1, 2, 3]]
    assert seqs.drop_last(np.array([1, 1, 2])).to_lists() == [[1, 2], [], []]
    assert seqs.last(1).tolist() == [3, 4, 6]
    assert seqs.item_counts().tolist() == [0, 1, 1, 1, 1, 1, 1]


def test_leave_one_out_follows_the_paper():
    seqs = Sequences.from_lists([[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]], num_items=10)
    split = leave_one_out(seqs)
    # train on all but the last two; a user too short to evaluate keeps everything for training
    assert split.train.to_lists() == [[1, 2, 3], [6, 7], [8]]
    assert split.valid.inputs.to_lists() == [[1, 2, 3], [8]]
    assert split.valid.targets.tolist() == [4, 9]
    # test input includes the validation item
    assert split.test.inputs.to_lists() == [[1, 2, 3, 4], [8, 9]]
    assert split.test.targets.tolist() == [5, 10]
    assert split.test.users.tolist() == [0, 2]
