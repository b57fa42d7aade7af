from pathlib import Path

import pytest

from recengine.errors import UserError
from recengine.plugins import load_registry
from recengine.tune_space import CategoricalParam, FloatParam, IntParam, check_space, override, read_space, recipe_with
from recengine.recipe import read_toml

TINY = Path(__file__).parent / "data" / "tune-tiny.toml"


def tiny_recipe() -> dict:
    return read_toml(TINY)


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def space(tmp_path, text):
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


def errors_of(fn) -> list[str]:
    with pytest.raises(UserError) as exc:
        fn()
    return str(exc.value).splitlines()


def test_reads_dotted_keys_and_tables(tmp_path):
    params = read_space(space(tmp_path, """
train.lr = { type = "float", low = 1e-4, high = 3e-3, log = true }
train.mask_prob = { type = "categorical", choices = [0.15, 0.2, 0.3] }
[model]
layers = { type = "int", low = 1, high = 4 }
"""))
    by_key = {p.key: p.distribution for p in params}
    assert set(by_key) == {"train.lr", "model.layers", "train.mask_prob"}
    assert isinstance(by_key["train.lr"], FloatParam) and by_key["train.lr"].log
    assert isinstance(by_key["model.layers"], IntParam) and (by_key["model.layers"].low, by_key["model.layers"].high) == (1, 4)
    assert isinstance(by_key["train.mask_prob"], CategoricalParam) and by_key["train.mask_prob"].choices == [0.15, 0.2, 0.3]


def test_malformed_parameters_are_all_reported_at_once(tmp_path):
    lines = errors_of(lambda: read_space(space(tmp_path, """
train.lr = { type = "float", low = 1e-2, high = 1e-3 }
train.weight_decay = { type = "float", low = 0.0, high = 0.1, log = true }
model.layers = { type = "integer", low = 1, high = 4 }
model.dropout = { low = 0.1, high = 0.2 }
model.heads = 2
train.mask_prob = { type = "categorical", choices = [] }
train.epochs = { type = "int", low = 1, high = 4, lo = 2 }
""")))
    assert len(lines) == 7
    text = "\n".join(lines)
    for key, words in [("train.lr", "must not be above high"), ("train.weight_decay", "log = true needs low > 0"),
                       ("model.layers", "type must be"), ("model.dropout", "missing type"), ("model.heads", "expected a table"),
                       ("train.mask_prob.choices", "at least 1"), ("train.epochs.lo", "unknown key")]:
        assert any(line.startswith(f"{tmp_path / 'space.toml'}: {key}") and words in line for line in lines), (key, text)


def test_empty_space_and_missing_file(tmp_path):
    assert "no parameters" in errors_of(lambda: read_space(space(tmp_path, "# nothing\n")))[0]
    assert "search space not found" in errors_of(lambda: read_space(tmp_path / "absent.toml"))[0]


def test_space_checked_against_recipe(tmp_path, registry):
    params = read_space(space(tmp_path, """
model.dropoutt = { type = "float", low = 0.0, high = 0.3 }
model.dropout = { type = "float", low = 0.0, high = 1.5 }
train.mask_prob = { type = "categorical", choices = [0.2, 1.2] }
model.layers = { type = "int", low = 0, high = 2 }
model.heads = { type = "categorical", choices = [2, 3] }
tarin.lr = { type = "float", low = 1e-4, high = 1e-3 }
train.lr = { type = "float", low = 1e-4, high = 1e-3, log = true }
"""))
    lines = errors_of(lambda: check_space(params, tiny_recipe(), registry, "space.toml"))
    assert len(lines) == 6, lines  # one per bad parameter; train.lr is fine
    expected = {
        "model.dropoutt": "not a key of this recipe (unknown key; did you mean 'dropout'?)",
        "model.dropout": "rejects 1.5",
        "train.mask_prob": "rejects 1.2",
        "model.layers": "rejects 0",
        "model.heads": "must divide hidden",
        "tarin.lr": "not a key of this recipe (tarin: unknown section",
    }
    for key, words in expected.items():
        assert any(line.startswith(f"space.toml: {key}: ") and words in line for line in lines), (key, lines)


def test_valid_space_passes_and_values_reach_the_recipe(registry):
    params = [p for p in read_space_text("""
model.layers = { type = "int", low = 1, high = 3 }
train.mask_prob = { type = "categorical", choices = [0.15, 0.3] }
""")]
    check_space(params, tiny_recipe(), registry, "space.toml")
    recipe = recipe_with(tiny_recipe(), {"model.layers": 3, "train.mask_prob": 0.3, "train.window": "last"}, registry, "t")
    assert recipe.model.options.layers == 3 and recipe.train.mask_prob == 0.3 and recipe.train.window == "last"


def test_override_writes_toml_values():
    assert override("train.lr", 0.001) == "train.lr=0.001"
    assert override("train.window", "last") == 'train.window="last"'
    assert override("train.mask_last", False) == "train.mask_last=false"


def read_space_text(text):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "space.toml"
        path.write_text(text)
        return read_space(path)


@pytest.mark.parametrize("space_file", sorted((Path(__file__).parent.parent / "spaces").glob("*.toml")), ids=lambda p: p.name)
def test_bundled_spaces_fit_the_quickstart_recipe(space_file, registry):
    quickstart = Path(__file__).parent.parent / "recipes" / "quickstart.toml"
    check_space(read_space(space_file), read_toml(quickstart), registry, str(space_file))
