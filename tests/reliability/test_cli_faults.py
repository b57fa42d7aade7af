"""Bad input through the real CLI: unknown item ids, broken third-party plugins."""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from recengine.cli.main import app
from recengine.plugins import load_registry

runner = CliRunner()


def one_error_line(result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_recommend_works_for_known_ids(trained_tiny_run):
    result = runner.invoke(app, ["recommend", str(trained_tiny_run), "--history", "1,2,3", "-k", "5"])
    assert result.exit_code == 0, result.stderr
    assert "Top 5" in result.stdout


@pytest.mark.parametrize("history, named", [
    ("1,2,999", ["999"]),  # beyond the catalog (50 items)
    ("0,1", ["0"]),  # the padding id
    ("51,1", ["51"]),  # num_items + 1 is [MASK]
    ("-1,abc,2", ["-1", "abc"]),  # negative and non-numeric: every bad one is named
    ("1e3", ["1e3"]),
])
def test_recommend_refuses_unknown_or_out_of_range_ids_and_names_them(trained_tiny_run, history, named):
    line = one_error_line(runner.invoke(app, ["recommend", str(trained_tiny_run), "--history", history]))
    assert "unknown item id" in line and all(name in line for name in named), line


def test_recommend_refuses_an_empty_history(trained_tiny_run):
    assert "empty" in one_error_line(runner.invoke(app, ["recommend", str(trained_tiny_run), "--history", " , "]))


BROKEN_AT_REGISTRATION = '''
from recengine.hookspecs import hookimpl

@hookimpl
def register_models(register):
    register("half_registered", lambda options, num_items: None)
    raise RuntimeError("boom while registering")
'''


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    """Two third-party plugins installed the way pip would (a dist-info with an entry point):
    one raises during registration, one cannot be imported."""
    (tmp_path / "broken_at_registration.py").write_text(BROKEN_AT_REGISTRATION)
    (tmp_path / "broken_at_import.py").write_text("raise ImportError('needs a package that is not installed')\n")
    dist = tmp_path / "recengine_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: recengine-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [recengine]
        broken_registration = broken_at_registration
        broken_import = broken_at_import
        """))
    monkeypatch.syspath_prepend(str(tmp_path))


def test_broken_plugins_are_named_disabled_and_the_cli_still_works(broken_plugins, tiny_recipe_path):
    with pytest.warns(UserWarning) as caught:
        registry = load_registry()
    assert set(registry.broken) == {"broken_registration", "broken_import"}
    assert "boom while registering" in registry.broken["broken_registration"]
    assert "half_registered" not in registry.names("model")  # what it registered before raising is dropped
    assert {"bert4rec", "synthetic"} <= set(registry.names("model")) | set(registry.names("dataset"))
    assert any("broken_registration" in str(w.message) for w in caught)

    result = runner.invoke(app, ["plugins", "list"])
    assert result.exit_code == 0, result.stderr
    assert "bert4rec" in result.stdout and "broken_registration" not in result.stdout
    stderr = " ".join(result.stderr.split())  # rich wraps long lines
    assert "broken_registration: register_models raised RuntimeError: boom while registering" in stderr
    assert "broken_import: ImportError: needs a package that is not installed" in stderr

    result = runner.invoke(app, ["recipes", "validate", str(tiny_recipe_path)])
    assert result.exit_code == 0, result.stderr
    (tiny_recipe_path.parent / "uses_broken.toml").write_text(tiny_recipe_path.read_text().replace('name = "bert4rec"', 'name = "half_registered"'))
    line = one_error_line(runner.invoke(app, ["recipes", "validate", str(tiny_recipe_path.parent / "uses_broken.toml")]))
    assert "unknown model 'half_registered'" in line
