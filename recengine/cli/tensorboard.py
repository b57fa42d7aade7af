"""`recengine tensorboard`: start TensorBoard on a directory of runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from recengine.cli._common import console, user_errors
from recengine.errors import UserError

EXAMPLES = """Examples:

  recengine tensorboard runs

  recengine tensorboard runs --port 6007 --bind-all      # reachable from other machines
"""


def tensorboard_command(runs_dir: Path, port: int = 6006, host: str = "localhost", bind_all: bool = False) -> list[str]:
    """The TensorBoard command line for ``runs_dir`` (its own interpreter, so the venv's TensorBoard runs)."""
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir}: no such directory (train a run first: recengine train recipes/quickstart.toml)")
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(runs_dir), "--port", str(port)]
    return command + (["--bind_all"] if bind_all else ["--host", host])


@user_errors
def tensorboard(
    runs_dir: Path = typer.Argument(Path("runs"), help="Directory holding run directories (each has tensorboard/ and profile/)."),
    port: int = typer.Option(6006, "--port", min=1, max=65535, help="Port to serve on."),
    host: str = typer.Option("localhost", "--host", help="Interface to serve on."),
    bind_all: bool = typer.Option(False, "--bind-all", help="Serve on every interface (overrides --host)."),
) -> None:
    """Start TensorBoard on RUNS_DIR: scalars, hparams, hardware text and profiler traces of every run."""
    command = tensorboard_command(runs_dir, port, host, bind_all)
    console.print(f"starting TensorBoard on {runs_dir}: http://{'<this-host>' if bind_all else host}:{port} (Ctrl+C stops it)")
    try:
        raise typer.Exit(subprocess.call(command))
    except FileNotFoundError:
        raise UserError("TensorBoard is not installed: pip install tensorboard") from None
