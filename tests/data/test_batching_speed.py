"""Trimming, fixed-size masked positions and length grouping (data/batching.py)."""

import torch

from recengine.data.batching import IGNORE, ClozeBatches, mask_budget, masked_positions, trim_lengths
from recengine.data.sequences import PAD, Sequences
from recengine_plugins.bert4rec import bert4rec


def _seqs(users=200, items=50, seed=0, spread=12):
    g = torch.Generator().manual_seed(seed)
    lengths = (2 + torch.randint(0, spread, (users,), generator=g)).tolist()
    lengths[0] = 40  # one long history
    return Sequences.from_lists([torch.randint(1, items + 1, (n,), generator=g).tolist() for n in lengths], items)


def test_trim_lengths_are_a_small_fixed_set():
    assert trim_lengths(50) == (8, 16, 24, 32, 40, 50)
    assert trim_lengths(30) == (8, 16, 24, 30)
    assert trim_lengths(8) == (8,)
    for max_len in range(1, 600):
        lengths = trim_lengths(max_len)
        assert lengths[-1] == max_len and list(lengths) == sorted(set(lengths))
        assert len(lengths) <= 16  # few shapes to compile
        assert all(b <= a * 1.25 + 8 for a, b in zip(lengths[:-2], lengths[1:-1]))  # waste stays bounded


def test_mask_budget_fits_and_wastes_little():
    for count in range(1, 5000):
        size = mask_budget(count)
        assert count <= size < max(count * 1.26, count + 8)
    assert len({mask_budget(c) for c in range(540, 600)}) <= 2


def test_masked_positions_pad_with_ignore():
    labels = torch.tensor([[0, 5, 0], [7, 0, 9]])
    positions, targets = masked_positions(labels)
    n = 3
    assert positions[:n].tolist() == [1, 3, 5] and targets[:n].tolist() == [5, 7, 9]
    assert (targets[n:] == IGNORE).all() and len(targets) == mask_budget(n)


def test_batches_are_trimmed_padding_only_and_match_untrimmed():
    seqs = _seqs()
    full = ClozeBatches(seqs, 50, 16, 0.3, trim=False, seed=3)
    trimmed = ClozeBatches(seqs, 50, 16, 0.3, trim=True, seed=3)
    widths = set()
    for a, b in zip(full.epoch(1), trimmed.epoch(1)):
        t = b.inputs.shape[1]
        widths.add(t)
        assert t in trim_lengths(50)
        assert (a.inputs[:, : 50 - t] == PAD).all()  # only padding was dropped
        assert torch.equal(a.inputs[:, 50 - t :], b.inputs) and torch.equal(a.labels[:, 50 - t :], b.labels)
        flat = b.labels.reshape(-1)
        real = b.targets != IGNORE
        assert torch.equal(flat[b.positions[real]], b.targets[real])
        assert int(real.sum()) == int((b.labels != PAD).sum())
    assert len(widths) > 1  # some batches were shortened


def test_trimmed_inputs_give_the_same_hidden_states_at_real_positions():
    torch.manual_seed(0)
    model = bert4rec(50, hidden=32, layers=2, heads=4, max_len=50).eval()
    batch = next(iter(ClozeBatches(_seqs(seed=1), 50, 32, 0.2, trim=False).epoch(0)))
    real = batch.inputs != PAD
    t = int(real.sum(dim=1).max())
    with torch.no_grad():
        full = model.encode(batch.inputs)
        short = model.encode(batch.inputs[:, -t:])
    torch.testing.assert_close(short[real[:, -t:]], full[real], rtol=1e-5, atol=1e-5)


def test_length_grouping_covers_every_user_once_and_shortens_batches():
    seqs = _seqs(users=512, spread=45)
    plain = ClozeBatches(seqs, 50, 16, 0.2, seed=0)
    grouped = ClozeBatches(seqs, 50, 16, 0.2, seed=0, length_grouping=8)
    g = grouped._generator(0)
    order = torch.randperm(grouped.num_users, generator=g)
    ends = grouped._window_ends(g)
    users = grouped._group_by_length(order, ends, g)
    assert sorted(users.tolist()) == list(range(512))
    padded = lambda batches: sum(b.inputs.numel() for b in batches.epoch(0))
    assert padded(grouped) < padded(plain)
