import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recengine.data.formats import Interactions
from recengine.data.preprocess import Preprocessing, k_core, preprocess
from recengine.errors import UserError


def raw(rows, names=None, ratings=True, times=True, scale=1):
    """rows: (user, item, rating, time) in file order."""
    users, items, r, t = (np.array(c) for c in zip(*rows))
    names = names or [f"i{k}" for k in range(int(items.max()) + 1)]
    return Interactions(users.astype(np.int64), items.astype(np.int64), names,
                        r.astype(np.float32) if ratings else None, t.astype(np.int64) if times else None, scale)


def test_chronological_with_file_order_tie_break_and_original_ids():
    x = raw([(0, 3, 5, 20), (0, 1, 5, 10), (0, 2, 5, 20), (1, 0, 5, 7), (0, 0, 5, 20)], names=["a", "b", "c", "d"])
    ds, _ = preprocess(x, Preprocessing())
    seqs = [[ds.item_ids[i] for i in s] for s in ds.sequences.to_lists()]
    assert seqs == [["b", "d", "c", "a"], ["a"]]  # time 10 first; the three at time 20 keep file order
    assert ds.item_ids[0] == "" and ds.item_ids[1:] == ["a", "b", "c", "d"]
    assert ds.timestamps.tolist() == [10, 20, 20, 20, 7]


def test_no_times_means_file_order_and_ms_become_seconds():
    ds, _ = preprocess(raw([(1, 2, 0, 0), (0, 1, 0, 0), (1, 0, 0, 0)], ratings=False, times=False), Preprocessing())
    assert ds.sequences.to_lists() == [[2], [3, 1]] and ds.timestamps is None
    ds, _ = preprocess(raw([(0, 0, 5, 1_500_000_000_999)], scale=1000), Preprocessing())
    assert ds.timestamps.tolist() == [1_500_000_000]


def test_rating_threshold_and_duplicates():
    rows = [(0, 0, 5, 1), (0, 1, 2, 2), (0, 0, 4, 3), (0, 2, 5, 4)]
    ds, _ = preprocess(raw(rows), Preprocessing(min_rating=4))
    assert ds.sequences.to_lists() == [[1, 1, 2]]
    ds, _ = preprocess(raw(rows), Preprocessing(duplicates="first"))
    assert ds.sequences.to_lists() == [[1, 2, 3]] and ds.timestamps.tolist() == [1, 2, 4]
    ds, _ = preprocess(raw(rows), Preprocessing(duplicates="last"))
    assert ds.sequences.to_lists() == [[2, 1, 3]] and ds.timestamps.tolist() == [2, 3, 4]
    with pytest.raises(UserError, match="no ratings"):
        preprocess(raw(rows, ratings=False), Preprocessing(min_rating=4))


def test_k_core_iterates_until_stable():
    # user 3 has one item; without it item 2 has one user (2), so then user 2 has one item left.
    rows = [(0, 0, 5, 1), (0, 1, 5, 2), (1, 0, 5, 1), (1, 1, 5, 2), (2, 1, 5, 1), (2, 2, 5, 2), (3, 2, 5, 3)]
    ds, report = preprocess(raw(rows), Preprocessing(k_core=2))
    assert ds.sequences.to_lists() == [[1, 2], [1, 2]] and ds.item_ids == ["", "i0", "i1"]
    assert report.k_core_rounds == 4  # three rounds that remove something, one that finds it stable


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=120), k=st.integers(2, 4))
def test_k_core_is_the_largest_stable_core(pairs, k):
    users, items = (np.array(c, dtype=np.int64) for c in zip(*pairs))
    keep, _ = k_core(users, items, k)
    u, i = users[keep], items[keep]
    if keep.any():  # stable: every kept user and item has >= k interactions
        assert (np.bincount(u)[u] >= k).all() and (np.bincount(i)[i] >= k).all()
    # the same core as a naive reference that removes one under-supported row at a time
    alive = list(range(len(pairs)))
    changed = True
    while changed:
        changed = False
        for r in alive:
            if sum(pairs[s][0] == pairs[r][0] for s in alive) < k or sum(pairs[s][1] == pairs[r][1] for s in alive) < k:
                alive.remove(r)
                changed = True
                break
    assert np.flatnonzero(keep).tolist() == alive


def test_min_length_and_empty_result():
    rows = [(0, 0, 5, 1), (0, 1, 5, 2), (1, 0, 5, 1)]
    ds, _ = preprocess(raw(rows), Preprocessing(min_length=2))
    assert ds.sequences.to_lists() == [[1, 2]] and ds.num_items == 2
    with pytest.raises(UserError, match="no interactions left after filtering"):
        preprocess(raw(rows), Preprocessing(k_core=3))
