"""docs/writing-a-plugin.md builds a complete third-party plugin: install exactly that code
through a real entry point and train with it."""

import re
import sys
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from recengine.cli.main import app

DOC = Path(__file__).parents[1] / "docs" / "writing-a-plugin.md"


def _blocks(lang: str) -> dict[str, str]:
    """Code blocks of the page, keyed by the file name on their first line."""
    found = {}
    for body in re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S):
        first, _, rest = body.partition("\n")
        found[first.lstrip("# ").strip()] = rest
    return found


def test_the_documented_plugin_installs_and_trains(tmp_path, monkeypatch):
    python, toml = _blocks("python"), _blocks("toml")
    project = tomllib.loads(toml["pyproject.toml"])["project"]
    site = tmp_path / "site"
    site.mkdir()
    (site / "recengine_gru.py").write_text(python["recengine_gru.py"])
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    entry_points = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["recengine"].items())
    (dist / "entry_points.txt").write_text(f"[recengine]\n{entry_points}")
    monkeypatch.syspath_prepend(str(site))
    recipe = tmp_path / "gru.toml"
    recipe.write_text(toml["gru.toml"] + '\n[run]\ndevice = "cpu"\n')
    try:
        runner = CliRunner()
        listed = runner.invoke(app, ["plugins", "list"])
        assert re.search(r"gru\s+│ recengine-gru\s+│ model 'gru'", listed.output), listed.output
        typo = runner.invoke(app, ["recipes", "validate", str(recipe), "--set", "model.hiden=64"])
        assert typo.exit_code == 1 and f"{recipe}: model.hiden: unknown key; did you mean 'hidden'?" in typo.output
        result = runner.invoke(app, ["train", str(recipe), "model.hidden=16", "--output-dir", str(tmp_path), "--name", "gru"])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "gru" / "results.json").exists()
    finally:
        sys.modules.pop("recengine_gru", None)
