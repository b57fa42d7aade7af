"""The sasrec plugin: causal, next-item trained, and driven by the CLI like bert4rec."""

import json
import subprocess
import sys

import pytest
import torch

from recengine.data.next_item import NextItemBatches, next_item_labels
from recengine.data.sequences import Sequences
from recengine.tasks import training_batches
from recengine_plugins.sasrec import sasrec


def test_position_t_never_sees_item_t_or_later():
    torch.manual_seed(0)
    model = sasrec(30, hidden=16, layers=2, max_len=6).eval()
    a = torch.tensor([[0, 0, 3, 4, 5, 6]])
    b = torch.tensor([[0, 0, 3, 4, 9, 31]])  # differs from position 4 on ([MASK] = 31 at the end)
    ha, hb = model.encode(a), model.encode(b)
    torch.testing.assert_close(ha[:, :5], hb[:, :5])  # position 4 sees only positions 0..3
    assert not torch.allclose(ha[:, 5], hb[:, 5])


def test_next_item_labels_skip_padding_and_first_item():
    tokens = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    assert next_item_labels(tokens).tolist() == [[0, 0, 0, 4, 5], [0, 2, 3, 4, 5]]


def test_model_declares_its_training_task():
    model = sasrec(10, hidden=8, layers=1, max_len=5)
    seqs = Sequences.from_lists([[1, 2, 3], [4, 5, 6, 7]], num_items=10)

    class Cfg:
        batch_size, window, length_grouping = 2, "last", 0

    batches = training_batches(model, seqs, Cfg, seed=0, device="cpu")
    assert isinstance(batches, NextItemBatches)
    batch = next(batches.epoch(0))
    assert (batch.inputs != model.mask_token).all()


@pytest.mark.slow
def test_sasrec_trains_via_the_cli_on_quickstart(tmp_path):
    cmd = [sys.executable, "-m", "recengine", "train", "recipes/quickstart.toml", "model.name=sasrec", "model.heads=1",
           "model.init_std=0.02", "dataset.users=1000", "train.epochs=3", "--output-dir", str(tmp_path), "--name", "sasrec"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "sasrec" / "results.json").read_text())
    assert results["protocol"].startswith("full ranking")
    test = results["test"]
    assert test["model"]["ndcg@10"] > 2 * test["popularity"]["ndcg@10"]
