import itertools
import re
import tomllib
from pathlib import Path

import pytest

from recengine.errors import UserError
from recengine.recipe import CORE_SECTIONS, apply_overrides, load_recipe, parse_override, resolve


def errors_of(fn) -> list[str]:
    with pytest.raises(UserError) as info:
        fn()
    return str(info.value).splitlines()


def test_valid_recipe_fills_defaults(tiny_recipe, registry):
    recipe = load_recipe(tiny_recipe, registry)
    assert recipe.model.options.hidden == 16
    assert recipe.precision.name == "fp32" and recipe.compiler.name == "eager"
    assert recipe.train.patience == 5  # default filled in


def test_missing_recipe(registry, tmp_path):
    assert errors_of(lambda: load_recipe(tmp_path / "nope.toml", registry)) == [
        f"{tmp_path / 'nope.toml'}: recipe not found (is the path right? `recengine recipes list` shows the bundled ones)"
    ]


def test_malformed_toml(registry, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nname = 1")
    (line,) = errors_of(lambda: load_recipe(bad, registry))
    assert line.startswith(f"{bad}: not valid TOML")


def test_every_problem_reported_at_once_one_line_each(registry, tiny_recipe):
    lines = errors_of(lambda: load_recipe(tiny_recipe, registry, [
        "train.lr=-1", "model.layerz=2", "dataset.name=synthetik", "eval.metric=ndcg@3", "bogus.key=1",
    ]))
    src = str(tiny_recipe)
    assert f"{src}: train.lr: Input should be greater than 0" in lines
    assert f"{src}: model.layerz: unknown key; did you mean 'layers'?" in lines
    assert any(re.match(rf"{re.escape(src)}: dataset.name: unknown dataset 'synthetik'. Available: .*synthetic.*Did you mean 'synthetic'", l) for l in lines)
    assert any(l.startswith(f"{src}: eval.metric: ") for l in lines)
    assert any(l.startswith(f"{src}: bogus: unknown section") for l in lines)
    assert len(lines) == 5


def test_the_default_metric_is_checked_against_eval_ks(registry, tiny_recipe):
    (line,) = errors_of(lambda: load_recipe(tiny_recipe, registry, ["eval.ks=[5]"]))
    assert line.startswith(f"{tiny_recipe}: eval.metric: 'ndcg@10' is not computed with eval.ks = [5]; add its K to eval.ks")
    assert load_recipe(tiny_recipe, registry, ["eval.ks=[5]", "eval.metric=ndcg@5"]).eval.metric == "ndcg@5"
    (line,) = errors_of(lambda: load_recipe(tiny_recipe, registry, ["eval.ks=[0]"]))  # one line: the metric is not blamed too
    assert "eval.ks: " in line


def test_touched_rows_with_fsdp2_is_refused_at_load(registry, tiny_recipe):
    (line,) = errors_of(lambda: load_recipe(tiny_recipe, registry, ['distributed.input_embedding_grads="touched-rows"',
                                                                      'distributed.strategy="fsdp2"']))
    assert line.startswith(f'{tiny_recipe}: distributed.input_embedding_grads: "touched-rows" is a DDP option')


def test_out_of_range_plugin_option(registry, tiny_recipe):
    lines = errors_of(lambda: load_recipe(tiny_recipe, registry, ["model.heads=3", "dataset.users=0"]))
    assert any("model: Value error, heads (3) must divide hidden (16)" in l for l in lines)
    assert any("dataset.users: Input should be greater than or equal to 1" in l for l in lines)


def test_ema_decay_is_off_by_default_and_must_be_below_one(registry, tiny_recipe):
    assert load_recipe(tiny_recipe, registry).train.ema_decay == 0.0
    assert load_recipe(tiny_recipe, registry, ["train.ema_decay=0.999"]).train.ema_decay == 0.999
    src = str(tiny_recipe)
    assert errors_of(lambda: load_recipe(tiny_recipe, registry, ["train.ema_decay=1.0"])) == [
        f"{src}: train.ema_decay: Input should be less than 1"]
    assert errors_of(lambda: load_recipe(tiny_recipe, registry, ["train.ema_decay=-0.5"])) == [
        f"{src}: train.ema_decay: Input should be greater than or equal to 0"]


@pytest.mark.parametrize("value", ["[0.9]", "[0.9, 0.99, 0.5]", "[]", "0.9"])
def test_pair_of_wrong_length_is_one_clear_line(registry, tiny_recipe, value):
    src = str(tiny_recipe)
    assert errors_of(lambda: load_recipe(tiny_recipe, registry, [f"train.betas={value}"])) == [
        f"{src}: train.betas: expected two values [beta1, beta2], e.g. [0.9, 0.999]"]
    assert errors_of(lambda: load_recipe(tiny_recipe, registry, [f"eval.temporal_quantiles={value}"])) == [
        f"{src}: eval.temporal_quantiles: expected two values [validation quantile, test quantile], e.g. [0.8, 0.9]"]


def test_required_section_missing(registry):
    lines = errors_of(lambda: resolve({"model": {"name": "bert4rec"}}, registry, "r.toml"))
    assert lines == ['r.toml: dataset: required section is missing (it needs at least name = "...")']


def test_unknown_monitor(registry, tiny_recipe):
    data = {**tomllib.loads(tiny_recipe.read_text()), "monitors": [{"name": "tensorbord"}]}
    (line,) = errors_of(lambda: resolve(data, registry, "r.toml"))
    assert line.startswith("r.toml: monitors.0.name: unknown monitor 'tensorbord'")


def test_overrides_parse_toml_values():
    assert parse_override("train.lr=3e-4") == (["train", "lr"], 3e-4)
    assert parse_override("eval.ks=[1, 10]") == (["eval", "ks"], [1, 10])
    assert parse_override("run.name=hello") == (["run", "name"], "hello")
    with pytest.raises(UserError, match="expected section.key=value"):
        parse_override("train.lr")
    with pytest.raises(UserError, match="is a value, not a section"):
        apply_overrides({"train": {"lr": 1}}, ["train.lr.x=2"])


def test_resolved_recipe_round_trips(registry, tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe, registry, ["model.layers=2"])
    saved = tmp_path / "resolved.toml"
    saved.write_text(recipe.to_toml())
    again = load_recipe(saved, registry)
    assert again.to_dict() == recipe.to_dict()
    assert again.model.options.layers == 2


def test_every_core_recipe_key_is_documented():
    lines = (Path(__file__).parents[1] / "docs" / "recipes.md").read_text().splitlines()
    for section, model in CORE_SECTIONS.items():
        for key, field in model.model_fields.items():
            row = next((line for line in lines if line.startswith(f"| `{section}.{key}`")), None)
            assert row is not None, f"docs/recipes.md does not document {section}.{key}"
            # The row carries the field's own description, so the docs cannot drift from the code.
            assert field.description in row, f"docs/recipes.md: {section}.{key} row differs from its description: {field.description!r}"


PLUGIN_KINDS = {"monitors": "monitor"}  # recipe section -> plugin kind, where they differ


def test_every_option_of_a_documented_plugin_section_is_documented(registry):
    """docs/recipes.md's `[section]` with `name = "x"` tables carry every option's own description."""
    lines = (Path(__file__).parents[1] / "docs" / "recipes.md").read_text().splitlines()
    headings = [(i, m.groups()) for i, line in enumerate(lines)
                if (m := re.match(r'### `\[\[?(\w+)\]\]?` with `name = "([\w-]+)"`', line))]
    assert {section for _, (section, _) in headings} >= {"model", "dataset", "compiler", "adapter", "monitors"}
    for start, (section, name) in headings:
        rows = [line for line in itertools.takewhile(lambda l: not l.startswith("#"), lines[start + 1:]) if line.startswith("| `")]
        prefix = "monitors.N" if section == "monitors" else section
        for key, field in registry.get(PLUGIN_KINDS.get(section, section), name).options.model_fields.items():
            row = next((row for row in rows if row.startswith(f"| `{prefix}.{key}`")), None)
            assert row is not None, f"docs/recipes.md: [{section}] {name} does not document {key}"
            assert field.description in row, f"docs/recipes.md: {prefix}.{key} ({name}) differs from its description"


def test_every_bundled_recipe_validates(registry):
    for path in sorted((Path(__file__).parents[1] / "recipes").glob("quickstart*.toml")):
        load_recipe(path, registry)
