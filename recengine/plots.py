"""The study's figures, drawn with matplotlib (Agg backend: no display needed).

    accuracy_vs_size.png     HR@10 and NDCG@10 against parameters, one line per configuration
    throughput_vs_size.png   samples/s and epoch time against parameters
    peak_memory.png          peak GPU memory per configuration, grouped by recipe
    step_time.png            step time per optimisation, grouped by recipe

A figure with nothing to show still gets written, saying why (for example peak GPU memory
on a CPU-only study), so a report always has the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

Row = dict[str, Any]
PLOTS = ("accuracy_vs_size", "throughput_vs_size", "peak_memory", "step_time")


def optimisation(row: Row) -> str:
    """'baseline', 'amp', 'compile', 'amp+compile', 'ilora+amp+compile'... from a row's plugins."""
    parts = []
    if row.get("adapter") not in (None, "none"):
        parts.append(str(row["adapter"]))
    if row.get("precision") not in (None, "fp32"):
        parts.append(str(row["precision"]))
    if row.get("compiler") not in (None, "eager"):
        parts.append("compile" if row["compiler"] == "torch-compile" else str(row["compiler"]))
    return "+".join(parts) or "baseline"


def _series_label(row: Row, several_devices: bool) -> str:
    return optimisation(row) + (f" @ {row.get('device')}" if several_devices else "")


def _configuration_key(row: Row) -> tuple:
    """Adapter, then precision, then compiler (the study's matrix order, baseline first), then device."""
    adapter = row.get("adapter") or "none"
    return (adapter != "none", adapter != "lora", adapter, row.get("precision") not in (None, "fp32"),
            row.get("compiler") not in (None, "eager"), str(row.get("device")))


def _colours(points: list[Row]) -> dict[str, Any]:
    """One colour per configuration, in matrix order: a hue per adapter and a shade per
    precision/compiler setting (tab20c), so the study's 12 configurations never share a colour
    as they do with matplotlib's 10-colour cycle. Other mixes get tab20's 20 colours in turn.
    Devices are told apart by marker and hatch instead (`_device_marks`)."""
    families: dict[str, list[str]] = {}
    for r in sorted(points, key=_configuration_key):
        family = families.setdefault(r.get("adapter") or "none", [])
        if optimisation(r) not in family:
            family.append(optimisation(r))
    if len(families) > 5 or any(len(f) > 4 for f in families.values()):
        cycle = plt.get_cmap("tab20").colors
        return {label: cycle[i % len(cycle)] for i, label in enumerate(x for f in families.values() for x in f)}
    shades = plt.get_cmap("tab20c").colors  # 5 hues x 4 shades, darkest first
    return {label: shades[4 * k + i] for k, family in enumerate(families.values()) for i, label in enumerate(family)}


def _device_marks(points: list[Row]) -> dict[Any, tuple[str, str]]:
    """(line marker, bar hatch) per device, so one configuration on two cards keeps its colour."""
    devices = list(dict.fromkeys(r.get("device") for r in sorted(points, key=lambda r: str(r.get("device")))))
    return {d: ("os^Dv<>"[i % 7], ["", "//", "..", "xx", "\\\\", "++"][i % 6]) for i, d in enumerate(devices)}


CROWDED = 6  # more series than this: legends go beside the axes, bar labels turn upright


def _ok(rows: list[Row], *keys: str) -> list[Row]:
    """Rows of finished cells that measured every one of ``keys`` (None and NaN are not measurements)."""
    return [r for r in rows if r.get("status", "ok") == "ok" and all(r.get(k) is not None and r[k] == r[k] for k in keys)]


def _series(points: list[Row]) -> dict[str, list[Row]]:
    """Rows per series (configuration, with the device when there are several), in matrix order."""
    several = len({r.get("device") for r in points}) > 1
    series: dict[str, list[Row]] = {}
    for r in sorted(points, key=_configuration_key):
        series.setdefault(_series_label(r, several), []).append(r)
    return series


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _lines(ax, rows: list[Row], y: str, ylabel: str, log_y: bool = False) -> None:
    """One line per configuration: ``y`` against parameters."""
    points = _ok(rows, "parameters", y)
    if not points:
        _empty(ax, f"no {ylabel} recorded")
        return
    colours, marks = _colours(points), _device_marks(points)
    for label, group in _series(points).items():
        group.sort(key=lambda r: r["parameters"])
        first = group[0]
        ax.plot([r["parameters"] / 1e6 for r in group], [r[y] for r in group], marker=marks[first.get("device")][0],
                linestyle="--" if first.get("compiler") in (None, "eager") else "-", color=colours[optimisation(first)],
                label=label)
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers (430, not 4.3x10^2) on log axes too
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("model size (million parameters)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def _bar_figure(rows: list[Row], y: str, ylabel: str, title: str, missing: str):
    """Grouped bars: one group per recipe (smallest model first), one bar per series; the figure
    widens with the number of bars so they stay readable."""
    points = _ok(rows, y)
    series = _series(points)
    recipes = sorted({r.get("recipe") or "?" for r in points},
                     key=lambda name: min((r.get("parameters") or 0) for r in points if (r.get("recipe") or "?") == name))
    fig, ax = plt.subplots(figsize=(max(10.0, 3.0 + 0.16 * len(series) * len(recipes)), 4.5))
    ax.set_title(title)
    if not points:
        _empty(ax, missing)
        return fig
    colours, marks = _colours(points), _device_marks(points)
    width = 0.8 / len(series)
    for i, (label, group) in enumerate(series.items()):
        by_recipe = {r.get("recipe") or "?": r[y] for r in group}
        values = [by_recipe.get(recipe, float("nan")) for recipe in recipes]  # not measured: no bar, no label
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(recipes))]
        bars = ax.bar(xs, values, width, label=label, color=colours[optimisation(group[0])], hatch=marks[group[0].get("device")][1])
        fmt = "{:.0f}" if max(by_recipe.values()) >= 10 else "{:.2f}"
        ax.bar_label(bars, labels=[fmt.format(v) if v == v else "" for v in values], fontsize=7, padding=2,
                     rotation=90 if len(series) > CROWDED else 0)  # upright labels collide in crowded groups
    ax.set_xticks(range(len(recipes)), recipes)
    ax.set_xlabel("recipe")
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.margins(y=0.12)  # room for the rotated labels above the tallest bar
    beside = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0)) if len(series) > CROWDED else {}  # inside, it would cover bars
    ax.legend(fontsize=8, title="configuration", title_fontsize=8, ncols=2 if len(series) > 16 else 1, **beside)
    return fig


def _legend_beside(fig, axes) -> None:
    """One legend for side-by-side line plots, right of them: a dozen series inside an axis hide
    the lines."""
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="configuration",
                   title_fontsize=8)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")  # "tight" keeps the legend beside the axes in the image
    plt.close(fig)
    tmp.replace(path)
    return path


def draw_all(rows: list[Row], out_dir: Path) -> list[Path]:
    """Draw every figure into ``out_dir``; return the PNG paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    fig, (hr, ndcg) = plt.subplots(1, 2, figsize=(11, 4.5))
    _lines(hr, rows, "hr@10", "HR@10 (test)")
    _lines(ndcg, rows, "ndcg@10", "NDCG@10 (test)")
    fig.suptitle("Accuracy against model size")
    _legend_beside(fig, (hr, ndcg))
    written.append(_save(fig, out_dir / "accuracy_vs_size.png"))

    fig, (speed, epoch) = plt.subplots(1, 2, figsize=(11, 4.5))
    _lines(speed, rows, "samples_per_s", "training throughput (samples/s)", log_y=True)
    _lines(epoch, rows, "epoch_s", "epoch time (s)", log_y=True)
    fig.suptitle("Throughput and epoch time against model size")
    _legend_beside(fig, (speed, epoch))
    written.append(_save(fig, out_dir / "throughput_vs_size.png"))

    fig = _bar_figure(rows, "peak_memory_mb", "peak GPU memory (MiB)", "Peak memory per configuration",
                      "no peak GPU memory recorded\n(peak memory needs a CUDA device; these cells ran on CPU)")
    written.append(_save(fig, out_dir / "peak_memory.png"))
    fig = _bar_figure(rows, "step_ms", "median step time (ms)", "Step time per optimisation", "no step time recorded")
    written.append(_save(fig, out_dir / "step_time.png"))
    return written
