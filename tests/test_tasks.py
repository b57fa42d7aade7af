"""recengine.tasks: the batch stream follows the model's own training task."""

import warnings

import pytest

from recengine.data.batching import ClozeBatches
from recengine.data.next_item import NextItemBatches
from recengine.data.sequences import Sequences
from recengine.recipe import TrainSection
from recengine.tasks import training_batches
from recengine_plugins.bert4rec import bert4rec
from recengine_plugins.sasrec import sasrec

SEQS = Sequences.from_lists([[1, 2, 3], [4, 5, 6, 7]], num_items=10)


def test_a_next_item_model_warns_of_the_cloze_options_it_ignores():
    cfg = TrainSection(batch_size=2, mask_prob=0.5, last_only_share=0.3)
    with pytest.warns(UserWarning, match=r"train.mask_prob = 0.5, train.last_only_share = 0.3 ignored: SASRec trains next-item"):
        batches = training_batches(sasrec(10, hidden=8, layers=1, max_len=5), SEQS, cfg, seed=0, device="cpu")
    assert isinstance(batches, NextItemBatches)


@pytest.mark.parametrize("make", [lambda: sasrec(10, hidden=8, layers=1, max_len=5),
                                  lambda: bert4rec(10, hidden=8, layers=1, heads=1, max_len=5)])
def test_no_warning_when_nothing_is_ignored(make):
    cloze = TrainSection(batch_size=2, mask_prob=0.5)  # read by bert4rec's cloze task
    model = make()
    cfg = cloze if model.training_task == "cloze" else TrainSection(batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = training_batches(model, SEQS, cfg, seed=0, device="cpu")
    assert isinstance(batches, ClozeBatches)  # NextItemBatches is a ClozeBatches too
