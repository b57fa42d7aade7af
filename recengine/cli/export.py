"""`recengine export`: a self-contained inference artifact of a trained run."""

from __future__ import annotations

from pathlib import Path

import typer

from recengine.cli._common import console, user_errors

EXAMPLES = """Examples:

  recengine export runs/quickstart-demo --format torch-export --out exports/quickstart

  recengine export runs/quickstart-demo --format torchscript --out exports/quickstart-ts -k 50

  recengine export runs/quickstart-demo --format onnx --out exports/quickstart-onnx   (pip install onnx onnxscript onnxruntime)

The artifact takes int64 (batch, max_len - 1) left-padded model ids (0 = padding) and returns
top-k model ids and scores; item_ids.json beside it maps model ids back to original ids.
"""


@user_errors
def export(
    run_dir: Path = typer.Argument(..., help="A run directory made by `recengine train`."),
    format: str = typer.Option("torch-export", "--format", help="torch-export (.pt2), torchscript (torch.jit.trace) or onnx."),
    out: Path = typer.Option(..., "--out", help="Directory to create for the artifact, item_ids.json and metadata.json."),
    k: int = typer.Option(20, "-k", "--k", min=1, help="How many items the artifact returns."),
    include_history: bool = typer.Option(False, "--include-history", help="Let the artifact recommend items in its input."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, latest, or a step directory name."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it already exists."),
) -> None:
    """Export a run as an inference artifact (sequences in, top-k ids and scores out), checked
    against the eager model on random histories before anything is written."""
    from recengine.export import export_run  # torch is imported only once the arguments are fine

    path = export_run(run_dir, format, out, k=k, exclude_history=not include_history, which=checkpoint, overwrite=overwrite)
    console.print(f"{format} artifact written to {path} (checked against the eager model)")
