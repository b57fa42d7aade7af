"""One results table from study cells, finished runs and bench JSON: CSV, JSON, markdown, plots.

A *row* is a flat dict with the keys in ``COLUMNS`` (missing values are None). Inputs are
read defensively: bench records from other versions may have more or fewer keys.

    rows = collect([Path("runs/a"), Path("bench.json")])
    write_report(rows, Path("report"))   # results.csv, results.json, results.md, plots/*.png
"""

from __future__ import annotations

import csv
import io
import json
import tomllib
from pathlib import Path
from typing import Any, Iterable

from recengine.checkpoint import atomic_write_text
from recengine.errors import UserError

# key -> column heading in the markdown table. CSV and JSON use the keys.
COLUMNS: dict[str, str] = {
    "cell": "cell",
    "recipe": "recipe",
    "precision": "precision",
    "compiler": "compiler",
    "adapter": "adapter",
    "status": "status",
    "samples_per_s": "samples/s",
    "step_ms": "step ms",
    "self_cuda_ms": "self CUDA ms/step",
    "self_cpu_ms": "self CPU ms/step",
    "peak_memory_mb": "peak memory MiB",
    "epoch_s": "epoch s",
    "hr@10": "HR@10",
    "ndcg@10": "NDCG@10",
    "parameters": "parameters",
    "trainable_parameters": "trainable parameters",
    "device": "device",
    "gpu_name": "GPU",
    "gpu_count": "GPUs",
    "cpu_name": "CPU",
    "cpu_count": "CPU cores",
    "python": "python",
    "torch": "torch",
    "cuda": "CUDA",
    "recengine": "recengine",
    "commit": "commit",
    "batch_size": "batch size",
    "error": "error",
}
# The markdown table leaves out what is the same for a whole machine (listed above the table).
MARKDOWN_SKIP = {"gpu_name", "gpu_count", "cpu_name", "cpu_count", "python", "torch", "cuda", "recengine", "commit", "batch_size"}
HARDWARE_KEYS = ("device", "gpu_name", "gpu_count", "cpu_name", "cpu_count", "torch", "cuda", "python", "recengine", "commit")


def _first(record: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if record.get(key) is not None:
            return record[key]
    return None


def _extra_columns(record: dict[str, Any]) -> dict[str, Any]:
    # Keys another version of bench may add (FLOPs, MFU): kept when numeric, named as they come.
    return {k: v for k, v in record.items()
            if ("flop" in k.lower() or "mfu" in k.lower()) and isinstance(v, (int, float)) and not isinstance(v, bool)}


def row_from_bench(bench: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A table row from a ``bench_recipe`` record (and whatever the caller knows besides)."""
    step_ms = _first(bench, "step_ms", "step_time_ms")
    if step_ms is None and bench.get("step_s") is not None:
        step_ms = bench["step_s"] * 1000
    peak = _first(bench, "peak_memory_mb", "peak_mem_mb")
    if peak is None and bench.get("peak_memory_gb") is not None:
        peak = bench["peak_memory_gb"] * 1024
    row = {
        "recipe": _first(bench, "recipe", "name"),
        "precision": bench.get("precision"),
        "compiler": bench.get("compiler"),
        "adapter": bench.get("adapter"),
        "status": bench.get("status", "ok"),
        "samples_per_s": _first(bench, "samples_per_s", "throughput"),
        "step_ms": step_ms,
        "self_cuda_ms": bench.get("self_cuda_ms"),
        "self_cpu_ms": bench.get("self_cpu_ms"),
        "peak_memory_mb": peak,
        "epoch_s": bench.get("epoch_s"),
        "hr@10": bench.get("hr@10"),
        "ndcg@10": bench.get("ndcg@10"),
        "parameters": bench.get("parameters"),
        "trainable_parameters": bench.get("trainable_parameters"),
        "batch_size": bench.get("batch_size"),
        **{k: bench.get(k) for k in HARDWARE_KEYS},
        **_extra_columns(bench),
    }
    row.update({k: v for k, v in extra.items() if v is not None})
    return row


def row_from_run(path: Path) -> dict[str, Any]:
    """A row from a finished training run directory (plus its bench.json/hardware.json if there)."""
    recipe = tomllib.loads((path / "recipe.toml").read_text())
    bench = _read_json(path / "bench.json") if (path / "bench.json").is_file() else {}
    hardware = _read_json(path / "hardware.json") if (path / "hardware.json").is_file() else {}
    results = _read_json(path / "results.json") if (path / "results.json").is_file() else None
    test = (results or {}).get("test", {}).get("model", {})
    row = row_from_bench({**hardware, **bench}, cell=bench.get("cell") or path.name,
                         recipe=bench.get("recipe") or recipe.get("run", {}).get("name"),
                         precision=recipe.get("precision", {}).get("name", "fp32"),
                         compiler=recipe.get("compiler", {}).get("name", "eager"),
                         adapter=recipe.get("adapter", {}).get("name", "none"),
                         status="ok" if results else "unfinished",
                         **{"hr@10": test.get("hr@10"), "ndcg@10": test.get("ndcg@10")})
    if row.get("parameters") is None:
        row["parameters"], row["trainable_parameters"] = _count_parameters(path)
    return row


def _count_parameters(path: Path) -> tuple[int | None, int | None]:
    # Built on the meta device: shapes only, so even a 430M model costs no memory.
    try:
        import torch

        from recengine.plugins import load_registry
        from recengine.recipe import read_toml, resolve
        from recengine.model import count_parameters
        from recengine.training import build_model

        recipe = resolve(read_toml(path / "recipe.toml"), load_registry(), source=str(path / "recipe.toml"))
        num_items = _read_json(path / "data.json")["num_items"]
        with torch.device("meta"):
            model, _ = build_model(recipe, num_items)
        return count_parameters(model), count_parameters(model, trainable_only=True)
    except Exception:  # a plugin missing on this machine: the count is left blank, not fatal
        return None, None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None


def rows_from_json(path: Path) -> list[dict[str, Any]]:
    """Rows from a study results.json ({"rows": [...]}), a bench record, or a list of them."""
    data = _read_json(path)
    if isinstance(data, dict):
        for key in ("rows", "results", "cells"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    records = data if isinstance(data, list) else [data]
    if not all(isinstance(r, dict) for r in records):
        raise UserError(f"{path}: expected bench results (a JSON object or a list of objects)")
    return [r if "status" in r and "cell" in r else row_from_bench(r, cell=r.get("cell")) for r in records]


def collect(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Rows from run directories, study output directories and bench/study JSON files."""
    rows: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if path.is_dir() and (path / "recipe.toml").is_file():
            rows.append(row_from_run(path))
        elif path.is_dir() and (path / "results.json").is_file():
            rows += rows_from_json(path / "results.json")
        elif path.is_file() and path.suffix == ".json":
            rows += rows_from_json(path)
        else:
            raise UserError(f"{path}: not a run directory, a study directory or a bench JSON file")
    return rows


def columns(rows: list[dict[str, Any]]) -> list[str]:
    extra = sorted({k for r in rows for k in r if k not in COLUMNS})
    return list(COLUMNS) + extra


def _cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns(rows), extrasaction="ignore")
    writer.writeheader()
    writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    return out.getvalue()


def to_markdown(rows: list[dict[str, Any]], hardware: list[dict[str, Any]] | None = None, plots: list[str] = ()) -> str:
    keys = [k for k in columns(rows) if k not in MARKDOWN_SKIP and any(r.get(k) is not None for r in rows)]
    heading = [COLUMNS.get(k, k) for k in keys]
    lines = ["# Results", ""]
    machines = hardware if hardware is not None else _machines(rows)
    for m in machines:
        lines.append("- " + ", ".join(f"{k}: {m[k]}" for k in HARDWARE_KEYS if m.get(k) is not None))
    lines += ["", "| " + " | ".join(heading) + " |", "|" + "---|" * len(heading)]
    lines += ["| " + " | ".join(_cell_text(r.get(k)) for k in keys) + " |" for r in rows]
    lines += ["", "Self CUDA time is the sum of kernel self times per step (blank on CPU); "
              "epoch time is steps per epoch x median step time; HR@10 and NDCG@10 are test metrics of trained cells."]
    lines += [""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _machines(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = tuple(r.get(k) for k in HARDWARE_KEYS)
        if any(key):
            seen.setdefault(key, {k: r.get(k) for k in HARDWARE_KEYS})
    return list(seen.values())


def write_report(rows: list[dict[str, Any]], out_dir: Path, hardware: list[dict[str, Any]] | None = None) -> dict[str, Path]:
    """Write results.csv/.json/.md and the plots under ``out_dir``; return what was written."""
    from recengine import plots  # matplotlib is imported only when a report is drawn

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = plots.draw_all(rows, out_dir / "plots")
    written = {"csv": out_dir / "results.csv", "json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    atomic_write_text(written["csv"], to_csv(rows))
    atomic_write_text(written["json"], json.dumps({"hardware": hardware or _machines(rows), "rows": rows}, indent=1))
    atomic_write_text(written["markdown"], to_markdown(rows, hardware, [str(p.relative_to(out_dir)) for p in drawn]))
    return {**written, **{p.stem: p for p in drawn}}
