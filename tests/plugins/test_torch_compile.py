import warnings

import pytest
import torch

from recengine.plugins import load_registry
from recengine_plugins import torch_compile as plugin


def _compiler(**options):
    return load_registry().get("compiler", "torch-compile").build(options)


def test_options_are_validated():
    entry = load_registry().get("compiler", "torch-compile")
    with pytest.raises(Exception):
        entry.build({"mode": "fastest"})


def test_compiled_function_gives_the_same_result():
    fn = _compiler(backend="eager")(lambda x, y: torch.tanh(x) * y + 1)
    x, y = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(fn(x, y), torch.tanh(x) * y + 1)


def test_falls_back_to_eager_with_one_warning_when_compile_fails(monkeypatch):
    calls = {"compiled": 0}

    def broken_compile(fn, **kwargs):
        def run(*args):
            calls["compiled"] += 1
            raise RuntimeError("InductorError: no working C compiler found\nmore details")
        return run

    monkeypatch.setattr(plugin.torch, "compile", broken_compile)
    fn = _compiler()(lambda x: x * 2)
    with pytest.warns(plugin.CompileFallbackWarning, match="no working C compiler"):
        assert fn(torch.tensor(3.0)).item() == 6.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, no second compile attempt
        assert fn(torch.tensor(4.0)).item() == 8.0
    assert calls["compiled"] == 1


def test_an_error_eager_also_raises_is_not_hidden(monkeypatch):
    monkeypatch.setattr(plugin.torch, "compile", lambda fn, **kw: fn)

    def bad(x):
        raise ValueError("real bug")

    with pytest.raises(ValueError, match="real bug"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _compiler()(bad)(torch.tensor(1.0))
