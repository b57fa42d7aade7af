import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import recengine
from recengine.cli.main import app
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


# A trained run shared by the modules that need one (each module trains its own copy).
SERVING_RECIPE = """
[run]
name = "tiny"
seed = 0
device = "cpu"

[dataset]
name = "synthetic"
users = 200
items = 50
mean_length = 10
seed = 0

[model]
name = "bert4rec"
hidden = 16
layers = 1
heads = 2
max_len = 12

[train]
epochs = 1
batch_size = 64
"""


def train_tiny_run(root: Path) -> Path:
    """Train the one-epoch serving recipe through the CLI into root/tiny (for inference and export tests)."""
    recipe = root / "tiny.toml"
    recipe.write_text(SERVING_RECIPE)
    result = CliRunner().invoke(app, ["train", str(recipe), "--output-dir", str(root), "--name", "tiny"])
    assert result.exit_code == 0, result.output
    return root / "tiny"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture(scope="module")
def recommender(run_dir):
    return recengine.load(run_dir, device="cpu")
