from typer.testing import CliRunner

from recengine.cli.main import app

runner = CliRunner()


def recipe(tmp_path, data: str, **dataset) -> str:
    (tmp_path / "games.txt").write_text(data)
    lines = [f'{k} = {v!r}'.replace("'", '"') for k, v in {"name": "user-item", "path": str(tmp_path / "games.txt"),
                                                          "cache_dir": str(tmp_path / "cache"), **dataset}.items()]
    text = "[dataset]\n" + "\n".join(lines) + '\n[model]\nname = "bert4rec"\n'
    (tmp_path / "r.toml").write_text(text)
    return str(tmp_path / "r.toml")


def test_prepare_then_stats(tmp_path):
    path = recipe(tmp_path, "1 5\n1 6\n1 7\n2 5\n2 6\n")
    result = runner.invoke(app, ["data", "prepare", path])
    assert result.exit_code == 0, result.output
    assert "built" in result.output and "2 users, 3 items, 5 interactions" in result.output
    result = runner.invoke(app, ["data", "stats", path])
    assert result.exit_code == 0 and "interactions" in result.output and "density" in result.output
    assert "0.833333" in result.output  # 5 / (2 x 3)
    again = runner.invoke(app, ["data", "prepare", path])
    assert "cache hit" in again.output


def test_stats_names_the_file_on_one_line_however_long_its_path(tmp_path):
    folder = tmp_path / "a-folder-with-a-rather-long-name" / "and-another-one-below-it"
    folder.mkdir(parents=True)
    path = recipe(folder, "1 5\n1 6\n2 5\n")
    result = runner.invoke(app, ["data", "stats", path])
    assert result.exit_code == 0, result.output
    assert str(folder / "games.txt") in result.output.splitlines()  # not broken to the table's width


def test_bad_line_is_one_error_line_with_file_and_line(tmp_path):
    path = recipe(tmp_path, "1 5\n1 x\n2 5\n")
    result = runner.invoke(app, ["data", "prepare", path])
    assert result.exit_code == 1 and "games.txt:2: malformed user-item line: '1 x'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["data", "stats", path, 'dataset.on_bad_lines="skip"'])
    assert result.exit_code == 0 and "bad lines skipped" in result.output


def test_synthetic_recipe_has_nothing_to_prepare():
    result = runner.invoke(app, ["data", "prepare", "recipes/quickstart.toml"])
    assert result.exit_code == 1 and "is generated, not read from a file" in result.output


def test_download_help_lists_the_datasets():
    result = runner.invoke(app, ["data", "download", "--help"])
    assert result.exit_code == 0 and "ml-20m" in result.output and "Example" in result.output
