import torch

from recengine.data import Sequences
from recengine.data.batching import ClozeBatches, cloze_mask, gather_windows


def test_windows_are_left_padded():
    items = torch.tensor([1, 2, 3, 4, 5, 6], dtype=torch.int32)
    out = gather_windows(items, torch.tensor([0, 4]), torch.tensor([4, 6]), max_len=3)
    assert out.tolist() == [[2, 3, 4], [0, 5, 6]]


def test_masking_statistics():
    tokens = torch.randint(1, 100, (4000, 50))
    tokens[:, :10] = 0  # padding
    g = torch.Generator().manual_seed(0)
    inputs, labels = cloze_mask(tokens, 0.2, mask_token=101, generator=g, mask_last=True)
    real = tokens != 0
    masked = inputs == 101
    assert not masked[~real].any(), "padding is never masked"
    assert (labels[masked] == tokens[masked]).all() and (labels[~masked] == 0).all()
    assert masked[:, -1].all(), "the last item is always masked"
    share = masked[:, :-1][real[:, :-1]].float().mean().item()
    assert abs(share - 0.2) < 0.005  # 156k Bernoulli(0.2) draws: std ~0.001
    assert (inputs[~masked] == tokens[~masked]).all()


def test_epochs_are_reproducible_and_cover_every_user():
    seqs = Sequences.from_lists([[i, i + 1, i + 2] for i in range(1, 40)], num_items=50)
    batches = ClozeBatches(seqs, max_len=4, batch_size=8, mask_prob=0.3, seed=1)
    first = [b.inputs for b in batches.epoch(0)]
    again = [b.inputs for b in batches.epoch(0)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert sum(len(x) for x in first) == 39
    resumed = list(batches.epoch(0, start_batch=2))
    assert torch.equal(resumed[0].inputs, first[2])
    assert not torch.equal(list(batches.epoch(1))[0].inputs, first[0])


def test_prefix_windows_end_anywhere_from_the_second_item():
    seqs = Sequences.from_lists([[1, 2, 3, 4, 5, 6], [7, 8], [9]], num_items=10)
    batches = ClozeBatches(seqs, max_len=4, batch_size=3, mask_prob=0.3, window="prefix")
    lengths = {u: set() for u in range(3)}
    for epoch in range(60):
        ends = batches._window_ends(torch.Generator().manual_seed(epoch)) - batches.starts
        for u in range(3):
            lengths[u].add(int(ends[u]))
    assert lengths == {0: {2, 3, 4, 5, 6}, 1: {2}, 2: {1}}, "every prefix of two or more items, whole short histories"


def test_last_only_rows_mask_their_last_item_alone():
    tokens = torch.randint(1, 100, (4000, 20))
    plain = cloze_mask(tokens, 0.4, mask_token=101, generator=torch.Generator().manual_seed(0))
    inputs, labels = cloze_mask(tokens, 0.4, mask_token=101, generator=torch.Generator().manual_seed(0), last_only_share=0.3)
    masked_per_row = (inputs == 101).sum(dim=1)
    last_only = masked_per_row == 1
    assert (inputs[:, -1] == 101).all() and (labels[:, -1] == tokens[:, -1]).all()
    assert abs(last_only.float().mean().item() - (0.3 + 0.7 * 0.6**19)) < 0.03
    # the other rows keep exactly the masks they get without the option (same random stream)
    assert torch.equal(inputs[~last_only], plain[0][~last_only]) and torch.equal(labels[~last_only], plain[1][~last_only])
    assert (labels[last_only][:, :-1] == 0).all()


def test_last_only_share_needs_mask_last():
    import pytest
    from pydantic import ValidationError

    from recengine.recipe import TrainSection

    assert TrainSection(last_only_share=0.5).last_only_share == 0.5
    with pytest.raises(ValidationError, match="mask_last"):
        TrainSection(mask_last=False, last_only_share=0.5)


def test_last_only_share_default_keeps_the_mask_stream_and_reaches_the_batches():
    from recengine.recipe import TrainSection
    from recengine.tasks import TASKS

    tokens = torch.randint(1, 100, (64, 20))
    inputs, _ = cloze_mask(tokens, 0.4, mask_token=101, generator=torch.Generator().manual_seed(0))
    expected = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(0)) < 0.4
    expected[:, -1] = True
    assert torch.equal(inputs == 101, expected), "the default draws exactly the item mask, nothing before it"
    seqs = Sequences.from_lists([list(range(1, 12))] * 40, num_items=20)
    batch = next(TASKS["cloze"](seqs, 10, TrainSection(batch_size=40, mask_prob=0.5, last_only_share=1.0), 0, "cpu").epoch(0))
    assert ((batch.inputs == 21).sum(dim=1) == 1).all(), "train.last_only_share reaches ClozeBatches through the cloze task"


def test_random_and_kept_shares_change_inputs_not_targets():
    tokens = torch.randint(1, 100, (4000, 20))
    tokens[:, :5] = 0  # padding
    plain_inputs, plain_labels = cloze_mask(tokens, 0.5, mask_token=101, generator=torch.Generator().manual_seed(0))
    inputs, labels = cloze_mask(tokens, 0.5, mask_token=101, generator=torch.Generator().manual_seed(0),
                                random_share=0.1, keep_share=0.1)
    assert torch.equal(labels, plain_labels), "the same items are targets, with the same labels"
    assert (inputs[:, -1] == 101).all(), "the always-masked last item stays [MASK], as at test time"
    masked = plain_labels[:, :-1] != 0
    shown, original = inputs[:, :-1][masked], tokens[:, :-1][masked]
    mask_share = (shown == 101).float().mean().item()
    kept_or_same = (shown == original).float().mean().item()  # kept, or a random draw that hit the item itself
    assert abs(mask_share - 0.8) < 0.01 and abs(kept_or_same - (0.1 + 0.1 / 99)) < 0.01
    assert ((shown >= 1) & (shown <= 101)).all(), "random items come from the catalog, never PAD"
    assert torch.equal(inputs[:, :-1][~masked], tokens[:, :-1][~masked]), "unmasked items are untouched"
    changed = inputs != plain_inputs
    assert changed.any() and (plain_labels[changed] != 0).all(), "only masked slots change"


def test_masked_shares_reach_the_batches_and_cannot_exceed_one():
    import pytest
    from pydantic import ValidationError

    from recengine.recipe import TrainSection
    from recengine.tasks import TASKS

    seqs = Sequences.from_lists([list(range(1, 12))] * 40, num_items=20)
    batch = next(TASKS["cloze"](seqs, 10, TrainSection(batch_size=40, mask_prob=0.5, mask_keep_share=1.0), 0, "cpu").epoch(0))
    assert ((batch.inputs == 21).sum(dim=1) == 1).all(), "train.mask_keep_share reaches ClozeBatches: only the last is [MASK]"
    with pytest.raises(ValidationError, match="mask_random_share \\+ train.mask_keep_share is over 1"):
        TrainSection(mask_random_share=0.6, mask_keep_share=0.5)
