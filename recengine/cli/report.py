"""`recengine report`: one table and the plots from finished runs, studies and bench JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from recengine.cli._common import console, user_errors
from recengine.errors import UserError
from recengine.report import collect, write_report

EXAMPLES = """Examples:

  recengine report runs/quickstart-* --out report

  recengine report runs/studies/scaling-h100 runs/studies/scaling-h200 --out report/gpus

  recengine report bench.json runs/my-run --out report
"""


@user_errors
def report(
    inputs: list[Path] = typer.Argument(..., help="Run directories, study result directories or bench JSON files."),
    out: Path = typer.Option(..., "--out", help="Where results.csv/.json/.md and plots/ are written."),
) -> None:
    """Build the results table (CSV, JSON, markdown) and the plots from finished work."""
    rows = collect(inputs)
    if not rows:
        raise UserError("nothing to report: the inputs hold no runs or bench results")
    written = write_report(rows, out)
    console.print(f"{len(rows)} rows; wrote {', '.join(str(p) for p in written.values())}")
