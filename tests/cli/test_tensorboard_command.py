import sys

import pytest
from typer.testing import CliRunner

from recengine.cli import tensorboard as tb
from recengine.cli.main import app
from recengine.errors import UserError


def test_command_points_tensorboard_at_the_runs(tmp_path):
    command = tb.tensorboard_command(tmp_path, port=6007)
    assert command == [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--port", "6007", "--host", "localhost"]
    assert tb.tensorboard_command(tmp_path, bind_all=True)[-1] == "--bind_all"
    with pytest.raises(UserError, match="no such directory"):
        tb.tensorboard_command(tmp_path / "missing")


def test_cli_runs_the_command_without_a_server(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(tb.subprocess, "call", lambda command: started.append(command) or 0)
    result = CliRunner().invoke(app, ["tensorboard", str(tmp_path), "--port", "6010"])
    assert result.exit_code == 0, result.output
    assert started[0][-4:] == ["--port", "6010", "--host", "localhost"]
    missing = CliRunner().invoke(app, ["tensorboard", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "Traceback" not in missing.output
