import textwrap
from pathlib import Path

import pytest
import torch

from recengine.plugins import load_registry

torch.set_num_threads(1)

TINY_RECIPE = """
[run]
name = "tiny"
seed = 0
device = "cpu"

[dataset]
name = "synthetic"
users = 80
items = 30
mean_length = 8
popularity_exponent = 0.6
follow_prob = 0.8

[model]
name = "bert4rec"
hidden = 16
layers = 1
heads = 2
max_len = 12
init_std = 0.1

[train]
epochs = 3
batch_size = 16
lr = 3e-3
warmup_steps = 2
log_every_steps = 1
"""


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(TINY_RECIPE))
    return path


@pytest.fixture(scope="session")
def registry():
    return load_registry()
