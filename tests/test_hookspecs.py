"""Every hook, and every argument of it, is documented in docs/hooks.md."""

import inspect
import re
from pathlib import Path

from recengine import hookspecs

DOC = Path(__file__).parents[1] / "docs" / "hooks.md"


def _hooks():
    return {name: fn for name, fn in vars(hookspecs).items() if name.startswith("register_") and inspect.isfunction(fn)}


def test_hooks_exist():
    assert len(_hooks()) == 7


def test_every_hook_and_argument_is_documented():
    text = DOC.read_text()
    for name, fn in _hooks().items():
        match = re.search(rf"^## `{name}\((.*?)\)`\n(.*?)(?=^## |\Z)", text, re.M | re.S)
        assert match, f"docs/hooks.md has no '## `{name}(...)`' section"
        for arg in inspect.signature(fn).parameters:
            assert f"`{arg}`" in match.group(2), f"argument '{arg}' of {name} is not documented"
