from pathlib import Path

import pytest
from typer.testing import CliRunner

from recengine.cli.main import app

ROOT = Path(__file__).parents[2]


def test_study_list_and_scaling_matrix():
    result = CliRunner().invoke(app, ["study", str(ROOT / "studies" / "scaling.toml"), "--list"])
    assert result.exit_code == 0, result.output
    cells = result.output.split()
    assert len(cells) == 4 * 2 * 2 * 3 and "430m-amp-torch-compile-ilora" in cells and "5m-fp32-eager-none" in cells


def test_study_only_selects_cells_by_glob():
    scaling = str(ROOT / "studies" / "scaling.toml")
    result = CliRunner().invoke(app, ["study", scaling, "--list", "--only", "430m-*", "--only", "5m-amp-*-none"])
    assert result.exit_code == 0, result.output
    cells = result.output.split()
    assert len(cells) == 2 + 12 and cells[:2] == ["5m-amp-eager-none", "5m-amp-torch-compile-none"]
    assert all(c.startswith("430m-") for c in cells[2:])
    result = CliRunner().invoke(app, ["study", scaling, "--list", "--only", "9000m-*"])
    assert result.exit_code == 1 and "no cell of" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["study", scaling, "--only", "5m-*"])
    assert result.exit_code == 1 and "its own --out" in result.output


def test_report_and_profile_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "not a run directory" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["profile", str(ROOT / "studies" / "recipes" / "tiny.toml"), "--profiler", "nope"])
    assert result.exit_code == 1 and "unknown profiler 'nope'" in result.output


@pytest.mark.slow
def test_profile_command_on_cpu(tmp_path):
    result = CliRunner().invoke(app, ["profile", str(ROOT / "studies" / "recipes" / "tiny.toml"), "--steps", "1",
                                      "--out", str(tmp_path), "profiler.wait=0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "summary.txt").is_file() and list(tmp_path.glob("chrome-trace-*.json"))
