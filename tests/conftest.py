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


def random_batches(max_len: int, batch_size: int, mask_prob: float, min_length: int = 3, length_grouping: int = 4):
    """Cloze batches over 300 random histories of 30 items, lengths min_length to min_length + 39."""
    from recengine.data.batching import ClozeBatches
    from recengine.data.sequences import Sequences

    g = torch.Generator().manual_seed(0)
    lengths = (min_length + torch.randint(0, 40, (300,), generator=g)).tolist()
    seqs = Sequences.from_lists([torch.randint(1, 31, (n,), generator=g).tolist() for n in lengths], 30)
    return ClozeBatches(seqs, max_len, batch_size, mask_prob, seed=0, length_grouping=length_grouping)


def tiny_train_step(max_len: int, **sections):
    """(model, TrainStep) of a one-layer hidden-16 BERT4Rec over 30 items on CPU; ``sections``
    choose plugins, e.g. ``precision={"name": "amp"}``."""
    from recengine.recipe import resolve
    from recengine.training import TrainStep, adamw

    cpu = torch.device("cpu")
    recipe = resolve({"run": {"device": "cpu"}, "dataset": {"name": "synthetic"}, **sections,
                      "model": {"name": "bert4rec", "hidden": 16, "layers": 1, "heads": 2, "max_len": max_len}}, load_registry())
    model = recipe.model.build(num_items=30)
    step = TrainStep(model, adamw(model, 1e-3, 0.0, (0.9, 0.999), cpu), recipe.precision.build(device=cpu), recipe.compiler.build(),
                     recipe.train)
    return model, step


@pytest.fixture
def averages(monkeypatch) -> list:
    """(model, average, its initial values) for every weight average `train()` builds in this test."""
    from recengine import training

    built = []

    def recording(model, decay, **kw):
        average = training_weight_average(model, decay, **kw)
        built.append((model, average, [a.clone() for a in getattr(average, "average", [])]))
        return average

    training_weight_average = training.weight_average
    monkeypatch.setattr(training, "weight_average", recording)
    return built


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
