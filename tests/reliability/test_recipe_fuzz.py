"""Property-based tests of the recipe loader: whatever the file or the overrides hold, the
result is a Recipe or one UserError (one line per problem), never another exception."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recengine.errors import UserError
from recengine.recipe import CORE_SECTIONS, PLUGIN_SECTIONS, Recipe, apply_overrides, load_recipe, read_toml, resolve

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

KNOWN_KEYS = sorted({key for model in CORE_SECTIONS.values() for key in model.model_fields}
                    | {"name", "users", "items", "mean_length", "hidden", "layers", "heads", "max_len", "dropout", "ks", "metric"})
SECTIONS = sorted(set(CORE_SECTIONS) | {key for key, _ in PLUGIN_SECTIONS.values()} | {"monitors"})
PLUGIN_NAMES = ["synthetic", "bert4rec", "fp32", "eager", "none", "tensorboard", "nope", ""]

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(PLUGIN_NAMES + ["ndcg@10", "mrr", "hr@5", "random", "last", "cpu", "cuda:7"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KNOWN_KEYS), inner, max_size=4),
                      max_leaves=12)
sections = st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6), values, max_size=6)
recipes = st.dictionaries(
    st.sampled_from(SECTIONS) | st.text(max_size=6),
    sections | values | st.lists(sections, max_size=3),
    max_size=8,
)

VALID = {
    "dataset": {"name": "synthetic", "users": 50, "items": 20, "mean_length": 5},
    "model": {"name": "bert4rec", "hidden": 16, "layers": 1, "heads": 1, "max_len": 8},
}


def loads_or_user_error(fn, *args):
    try:
        result = fn(*args)
    except UserError as err:
        assert str(err).strip(), "an empty error message"
        return None
    assert isinstance(result, Recipe)
    return result


@SETTINGS
@given(data=recipes)
def test_random_recipe_data(registry, data):
    loads_or_user_error(resolve, data, registry)


@SETTINGS
@given(data=st.fixed_dictionaries({}, optional={
    "dataset": st.fixed_dictionaries({"name": st.sampled_from(PLUGIN_NAMES)}, optional={k: values for k in ("users", "items", "mean_length", "seed")}),
    "model": st.fixed_dictionaries({"name": st.sampled_from(PLUGIN_NAMES)}, optional={k: values for k in ("hidden", "heads", "layers", "max_len", "dropout", "ffn")}),
    "train": st.dictionaries(st.sampled_from(sorted(CORE_SECTIONS["train"].model_fields)), values, max_size=5),
    "eval": st.dictionaries(st.sampled_from(sorted(CORE_SECTIONS["eval"].model_fields)), values, max_size=3),
    "run": st.dictionaries(st.sampled_from(sorted(CORE_SECTIONS["run"].model_fields)), values, max_size=3),
}))
def test_random_values_in_known_places(registry, data):
    """Closer to real recipes: right sections and keys, random values. Successes round-trip."""
    recipe = loads_or_user_error(resolve, data, registry)
    if recipe is not None:
        again = resolve(__import__("tomllib").loads(recipe.to_toml()), registry)
        assert again.to_dict() == recipe.to_dict()
        for section in (recipe.train, recipe.eval, recipe.run):
            for value in section.model_dump().values():
                assert not (isinstance(value, float) and not math.isfinite(value)), "a NaN/inf got through"


toml_lines = st.one_of(
    st.sampled_from([f"[{s}]" for s in SECTIONS] + ["[[monitors]]", "[train", "]]", "[dataset.x]", "# comment", ""]),
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(KNOWN_KEYS) | st.text(max_size=5),
              st.sampled_from(["1", "-0", "1e400", "nan", "inf", "-inf", '"x"', "'", "[1, 2", "[]", "{a = 1}", "true", "0x10",
                               "1979-05-27", '"""', "[[[[[[[[[[1]]]]]]]]]]", "9" * 30, '"synthetic"', '"bert4rec"'])),
    st.text(max_size=20),
)


@SETTINGS
@given(lines=st.lists(toml_lines, max_size=15))
def test_random_toml_text(tmp_path, registry, lines):
    path = tmp_path / "fuzz.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    loads_or_user_error(load_recipe, path, registry)


@SETTINGS
@given(raw=st.binary(max_size=64))
def test_random_bytes(tmp_path, registry, raw):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(raw)
    loads_or_user_error(load_recipe, path, registry)


@SETTINGS
@given(overrides=st.lists(st.builds(lambda k, sep, v: f"{k}{sep}{v}", st.sampled_from(["train.lr", "model.hidden", "monitors.0.name", "run",
                                                                                         "dataset.users.x", ".", "eval.ks.1", "a.b.c", ""]) | st.text(max_size=8),
                                    st.sampled_from(["=", "", "=="]), st.text(max_size=10) | st.sampled_from(["[[[[1]]]]", "{}", "nan", "1e999"])),
                          max_size=4))
def test_random_overrides(registry, overrides):
    base = {**VALID, "monitors": [{"name": "tensorboard"}]}
    loads_or_user_error(lambda: resolve(apply_overrides(__import__("copy").deepcopy(base), overrides), registry))


@pytest.mark.parametrize("text", ["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b=" * 3000 + "1" + "}" * 3000])
def test_deeply_nested_toml_is_a_user_error(tmp_path, text):
    path = tmp_path / "deep.toml"
    path.write_text(text)
    with pytest.raises(UserError, match="deep.toml: .*nested"):
        read_toml(path)
    with pytest.raises(UserError, match="nested"):
        apply_overrides({}, ["train.lr=" + "[" * 5000 + "]" * 5000])
