"""`recengine recommend`: top-k items for one history (--history) or a JSONL file of them (--input)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from recengine.cli._common import console, err_console, user_errors
from recengine.errors import UserError
from recengine.progress import progress_bar

EXAMPLES = """Examples:

  recengine recommend runs/quickstart-demo --history 12,7,99 -k 10

  recengine recommend runs/quickstart-demo --input histories.jsonl --output recs.jsonl -k 20

Each input line is a JSON list of original item ids, oldest first (["12", "7", "99"]), or an
object {"user": "u1", "history": ["12", "7", "99"]}. Each output line, in input order, is
{"user": "u1", "items": [...], "scores": [...]} ("user" only when the input had one).
"""


def read_histories(path: Path) -> tuple[list[list], list[object], list[int]]:
    """(histories, users, line numbers) from a JSONL file; a bad line is a UserError naming it."""
    if not path.is_file():
        raise UserError(f"{path}: input file not found")
    histories, users, numbers = [], [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not valid JSON ({exc.msg}); each line must be a list of item ids or "
                                '{"user": ..., "history": [...]}') from None
            user = None
            if isinstance(record, dict):
                if "history" not in record:
                    raise UserError(f'{path}:{number}: an object line needs a "history" key')
                user, record = record.get("user"), record["history"]
            if not isinstance(record, list):
                raise UserError(f"{path}:{number}: a history must be a JSON list of item ids")
            histories.append(record)
            users.append(user)
            numbers.append(number)
    if not histories:
        raise UserError(f"{path}: no histories in the file")
    return histories, users, numbers


def write_recommendations(recommender, path: Path, histories: list[list], users: list, lines: list[str],
                          k: int, exclude_history: bool, batch_size: int) -> None:
    """Score in batches, streaming to a temp file beside ``path``, renamed into place at the end."""
    encoded = [recommender.items.encode(h, line) for h, line in zip(histories, lines)]  # reject bad input before any work
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f, progress_bar("users", err_console) as progress:
            task = progress.add_task("recommend", total=len(encoded))
            for start in range(0, len(encoded), batch_size):
                recs = recommender.recommend_encoded(encoded[start:start + batch_size], k, exclude_history)
                for user, rec in zip(users[start:start + batch_size], recs):
                    record = {"user": user} if user is not None else {}
                    record.update(items=[item for item, _ in rec], scores=[score for _, score in rec])
                    f.write(json.dumps(record) + "\n")
                progress.advance(task, len(recs))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@user_errors
def recommend(
    run_dir: Path = typer.Argument(..., help="A run directory made by `recengine train`."),
    history: Optional[str] = typer.Option(None, "--history", help="One history: comma-separated original item ids, oldest first."),
    input: Optional[Path] = typer.Option(None, "--input", help="JSONL file of histories (see below)."),
    output: Optional[Path] = typer.Option(None, "--output", help="JSONL file for the recommendations (with --input)."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="How many items to recommend."),
    include_history: bool = typer.Option(False, "--include-history", help="Allow items already in the history."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Users scored at once (with --input)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, or auto (cuda when available)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, latest, or a step directory name."),
) -> None:
    """Recommend the top-k next items for one history or for every history in a JSONL file.

    Histories longer than the model's max_len - 1 are truncated to their most recent items;
    unknown item ids and empty histories are rejected with the line that holds them.
    """
    from recengine.inference import load  # torch is imported only once the arguments are fine
    from recengine.training import resolve_device

    if (history is None) == (input is None):
        raise UserError("give exactly one of --history 12,7,99 or --input histories.jsonl")
    if input is not None and output is None:
        raise UserError("--input needs --output recs.jsonl")
    if history is not None and output is not None:
        raise UserError("--output writes the recommendations for --input histories.jsonl; with --history they are "
                        "printed: drop --output")
    device = str(resolve_device(device, option="--device"))  # the error names the flag, not a recipe key
    if input is not None:
        histories, users, numbers = read_histories(input)
        recommender = load(run_dir, device=device, checkpoint=checkpoint)
        lines = [f"{input}:{n}" for n in numbers]
        write_recommendations(recommender, output, histories, users, lines, k, not include_history, batch_size)
        console.print(f"{len(histories):,} users: top {k} written to {output}")
        return
    items = [h.strip() for h in history.split(",") if h.strip()]
    recommender = load(run_dir, device=device, checkpoint=checkpoint)
    (recs,) = recommender.recommend_encoded([recommender.items.encode(items, "--history")], k, not include_history)
    table = Table(title=f"Top {k} for history {','.join(items)}")
    table.add_column("rank", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    for rank, (item, score) in enumerate(recs, 1):
        table.add_row(str(rank), item, f"{score:.4f}")
    console.print(table)
