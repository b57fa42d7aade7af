import sys
import textwrap
import types

import pytest

from recengine.errors import UserError
from recengine.hookspecs import hookimpl
from recengine.plugins import HOOKS, load_registry
from recengine.recipe import load_recipe


def test_first_party_plugins_register_through_entry_points(registry):
    assert registry.plugins["bert4rec"] == "recengine"
    assert "bert4rec" in registry.names("model")
    assert "synthetic" in registry.names("dataset")
    assert "tensorboard" in registry.names("monitor")
    for kind, name in [("precision", "fp32"), ("compiler", "eager"), ("adapter", "none"), ("profiler", "none")]:
        assert registry.get(kind, name).plugin == "defaults"


def test_every_kind_has_a_hook():
    assert set(HOOKS) == {"dataset", "model", "adapter", "precision", "compiler", "profiler", "monitor"}


def _plugin(**hooks):
    module = types.SimpleNamespace()
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return module


def test_duplicate_name_is_an_error_naming_both_plugins():
    clash = _plugin(register_models=lambda register: register("bert4rec", lambda o, num_items: None))
    with pytest.raises(UserError, match=r"'bert4rec'.*plugin 'bert4rec'.*plugin 'clash'"):
        load_registry(extra_plugins=[("clash", clash)])


def test_disable_plugins_by_name(monkeypatch):
    monkeypatch.setenv("RECENGINE_DISABLE_PLUGINS", "tensorboard, synthetic")
    registry = load_registry()
    assert "tensorboard" not in registry.plugins and "synthetic" not in registry.names("dataset")
    assert "bert4rec" in registry.names("model")


def test_plugin_raising_during_registration_is_disabled_not_fatal():
    def broken(register):
        register("half", lambda o: None)
        raise RuntimeError("boom")

    with pytest.warns(UserWarning, match="plugin 'broken' was disabled"):
        registry = load_registry(extra_plugins=[("broken", _plugin(register_datasets=broken))])
    assert "half" not in registry.names("dataset")
    assert "boom" in registry.broken["broken"]
    assert "synthetic" in registry.names("dataset")


def test_unknown_name_lists_available_and_closest(registry):
    with pytest.raises(UserError, match=r"unknown model 'bert4recc'. Available: bert4rec.*Did you mean 'bert4rec'"):
        registry.get("model", "bert4recc")


THIRD_PARTY = '''
from pydantic import BaseModel
from recengine.hookspecs import hookimpl
from recengine_plugins.synthetic import synthetic

class Options(BaseModel):
    users: int = 50

@hookimpl
def register_datasets(register):
    register("tiny-third-party", lambda options: synthetic(options.users, 20, 6), options=Options)
'''


def test_third_party_plugin_found_through_a_real_entry_point(tmp_path, monkeypatch, tiny_recipe):
    (tmp_path / "my_recs_plugin.py").write_text(THIRD_PARTY)
    dist = tmp_path / "my_recs_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-recs-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[recengine]\nmyrecs = my_recs_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry()
    entry = registry.get("dataset", "tiny-third-party")
    assert (entry.plugin, entry.distribution) == ("myrecs", "my-recs-plugin")
    recipe = load_recipe(tiny_recipe, registry, ['dataset={name="tiny-third-party", users=40}'])
    assert recipe.dataset.build().sequences.num_users == 40
    sys.modules.pop("my_recs_plugin", None)
