"""Timing the training step, the data pipeline and evaluation: the engine behind `recengine bench`.

``bench_recipe(recipe)`` builds the recipe's data, model and plugins exactly as training
does, runs ``warmup`` untimed steps (compilation happens there), then times ``steps`` steps
and reports the median. On CUDA each step is timed with device events and the host never
waits inside the loop, so the timings include launch gaps but no artificial syncs.

FLOPs are counted on real tokens only (padding and the padding slots of the masked
positions are free work that the step should not be credited for), so MFU says how close
the step is to what the model must compute.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from recengine.data.batching import IGNORE, Batch, ClozeBatches
from recengine.data.sequences import PAD, Dataset, Sequences
from recengine.data.split import leave_one_out
from recengine.errors import UserError
from recengine.evaluate import evaluate, model_scorer
from recengine.hardware import hardware_info
from recengine.model import count_parameters
from recengine.recipe import Recipe, apply_overrides, drop_none, resolve
from recengine.tasks import training_batches
from recengine.training import TrainStep, adamw, resolve_device

# Dense peak rates by device-name substring (first match wins): (bf16/fp16 TFLOP/s, fp32 TFLOP/s, memory TB/s).
# From the vendors' datasheets; fp32 is the plain (non-TF32) rate, as torch uses by default.
PEAKS = [
    ("H100 PCIe", 756.0, 51.0, 2.0),
    ("H100 NVL", 835.0, 60.0, 3.9),
    ("H100", 989.0, 67.0, 3.35),
    ("H200", 989.0, 67.0, 4.8),
    ("A100", 312.0, 19.5, 2.0),
]
ADAMW_BYTES_PER_PARAM = 28 + 12  # fused AdamW reads p, g, m, v and writes p, m, v (fp32); the norm clip reads g, then scales it


@dataclass(frozen=True)
class Shape:
    """A named benchmark shape: Electronics-like synthetic data and a model size."""

    model: dict[str, Any]
    batch_size: int
    items: int = 160_054
    users: int = 730_000
    mean_length: float = 9.0
    min_length: int = 5
    mask_prob: float = 0.15
    train: dict[str, Any] = field(default_factory=dict)


# Model sizes match recengine_plugins.bert4rec's named sizes (a test checks it).
SHAPES = {
    "electronics-85m": Shape({"hidden": 256, "layers": 4, "heads": 4, "ffn": 1024, "max_len": 50}, batch_size=256),
    "electronics-130m": Shape({"hidden": 384, "layers": 4, "heads": 6, "ffn": 1536, "max_len": 50}, batch_size=256),
    "electronics-430m": Shape({"hidden": 1024, "layers": 8, "heads": 16, "ffn": 4096, "max_len": 50}, batch_size=128),
    "quickstart": Shape({"hidden": 64, "layers": 2, "heads": 2, "max_len": 30}, batch_size=64, items=400, users=3000,
                        mean_length=20.0, min_length=3, mask_prob=0.2),
}


def shape_dataset(shape: Shape, users: int | None = None, seed: int = 0) -> Dataset:
    """Synthetic sequences of the shape's catalog and length profile (minimum ``min_length``,
    a long right tail, mean ``mean_length``) with Zipf-like item popularity. Only the shapes
    matter for speed, so this is fast even for 730,000 users."""
    rng = np.random.default_rng(seed)
    users = users or shape.users
    extra = shape.mean_length - shape.min_length
    # Negative binomial with dispersion 0.5: mean `extra`, a heavy tail like real histories.
    lengths = shape.min_length + rng.negative_binomial(0.5, 0.5 / (0.5 + extra), size=users)
    ranks = rng.zipf(1.1, size=int(lengths.sum())) - 1
    items = (rng.permutation(shape.items)[ranks % shape.items] + 1).astype(np.int32)
    return Dataset(Sequences.from_lengths(items, lengths, shape.items))


def shape_recipe(recipe: Recipe, shape: Shape, registry) -> Recipe:
    """``recipe`` with the shape's model size and batch settings."""
    data = recipe.to_dict()
    data["model"] = {"name": "bert4rec", **shape.model}
    data["train"].update({"batch_size": shape.batch_size, "mask_prob": shape.mask_prob, "mask_last": True, **shape.train})
    return resolve(drop_none(data), registry, recipe.source)


def parse_matrix(axes: list[str]) -> list[dict[str, str]]:
    """``["precision=fp32,amp", "compiler=eager,torch-compile"]`` -> every combination, each a
    {key: value} dict. A key without a dot names a plugin section's plugin (``precision.name``)."""
    options = []
    for axis in axes:
        key, sep, values = axis.partition("=")
        if not sep or not key or not values:
            raise UserError(f"--matrix '{axis}': expected key=value1,value2 (e.g. precision=fp32,amp)")
        options.append([(key, v) for v in values.split(",") if v])
    return [dict(combo) for combo in itertools.product(*options)] if options else [{}]


def matrix_recipe(recipe: Recipe, setting: dict[str, str], registry, overrides: list[str] = ()) -> Recipe:
    """``recipe`` with one matrix setting, then ``overrides`` (which win over a --shape's values)."""
    data = drop_none(recipe.to_dict())
    dotted = list(overrides)
    for key, value in setting.items():
        if "." in key:
            dotted.append(f"{key}={value}")
        else:
            data[key] = {"name": value}  # a different plugin: its own default options
    return resolve(apply_overrides(data, dotted), registry, recipe.source)


def peaks(name: str) -> tuple[float, float, float] | None:
    return next(((bf16, fp32, bw) for key, bf16, fp32, bw in PEAKS if key in name), None)


def train_flops(model: torch.nn.Module, batch: Batch) -> float | None:
    """FLOPs one training step must do on ``batch`` (forward + backward = 3 x forward),
    counted on real tokens and real masked positions only. BERT4Rec-shaped models only; an
    adapter that wraps the model (iLoRA's gate) is looked through, its own small FLOPs left out."""
    model = next((m for m in model.modules() if hasattr(m, "blocks")), model)
    blocks = getattr(model, "blocks", None)
    if not blocks or not hasattr(blocks[0], "fc1"):
        return None
    inputs, targets = batch.inputs.cpu(), batch.targets.cpu()
    hidden, ffn = blocks[0].fc1.in_features, blocks[0].fc1.out_features
    lengths = (inputs != PAD).sum(dim=1).double()
    tokens, masked = float(lengths.sum()), float((targets != IGNORE).sum())
    weight, _ = model.output_embedding()
    per_layer = tokens * (4 * hidden * hidden + 2 * hidden * ffn) + 2 * hidden * float((lengths**2).sum())  # projections, FFN, attention
    head = masked * hidden * hidden if isinstance(getattr(model, "head", None), torch.nn.Sequential) else 0.0
    macs = len(blocks) * per_layer + head + masked * weight.shape[0] * weight.shape[1]
    return 3 * 2 * macs


class _Timer:
    """Per-step times: device events on CUDA (no host sync between steps), wall clock on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def intervals_s(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_recipe(recipe: Recipe, steps: int = 20, warmup: int = 5, dataset: Dataset | None = None,
                 eval_users: int | None = 4096, data_batches: int = 50, profiler: Any = None) -> dict[str, Any]:
    """Step time, samples/s, peak memory, FLOPs and MFU of ``recipe``'s training step, plus the
    data pipeline's throughput on its own and evaluation users/s (``eval_users=0`` skips it,
    ``None`` evaluates every test user). With a ``profiler`` (a built profiler plugin), its
    window then runs on the same, already compiled step: its summary is ``result["profile"]``."""
    torch.manual_seed(recipe.run.seed)
    device = resolve_device(recipe.run.device)
    dataset = dataset if dataset is not None else recipe.dataset.build()
    split = leave_one_out(dataset.sequences)
    cfg = recipe.train
    with device:  # parameters are created (and initialised) on the device: fast even at 430M
        model = recipe.adapter.build().adapt(recipe.model.build(num_items=dataset.num_items))
    model.train()
    precision, compiler = recipe.precision.build(device=device), recipe.compiler.build()
    step = TrainStep(model, adamw(model, cfg.lr, cfg.weight_decay, cfg.betas, device), precision, compiler, cfg,
                     item_counts=split.train.item_counts())
    batches = training_batches(model, split.train, cfg, recipe.run.seed, device)
    result = {
        "recipe": recipe.run.name,
        "precision": recipe.precision.name,
        "compiler": recipe.compiler.name,
        "adapter": recipe.adapter.name,
        "plugins": {kind: getattr(recipe, kind).to_dict() for kind in ("model", "precision", "compiler", "adapter")},
        "batch_size": cfg.batch_size,
        "length_grouping": cfg.length_grouping,
        "parameters": count_parameters(model),
        "trainable_parameters": count_parameters(model, trainable_only=True),
        **hardware_info(device),  # device, GPU and CPU names and counts, torch, CUDA, recengine, commit
        **machine_load(device),
    }
    if steps > 0:
        counted = compile_counters()  # torch's counters live for the process: report this setting's part
        result.update(bench_steps(model, step, batches, steps, warmup, device, low_precision=recipe.precision.name != "fp32"))
        changed = counter_changes(counted, compile_counters())
        result["cudagraph_counters"] = {k: v for k, v in changed.items() if "cudagraph" in k}
        # Past dynamo's recompile limit the step silently runs eagerly: count it so it is said.
        # (torch 2.5-2.7 name the counter "cache_size_limit reached", later ones "Dynamo recompile limit exceeded ...")
        result["compile_gave_up"] = sum(v for k, v in changed.items()
                                        if any(s in k.lower().replace("_", " ") for s in ("recompile limit", "cache size limit")))
        # The load once more, after timing: a competitor that started meanwhile shows here.
        loads = [x for x in (result["host_load_1min"], machine_load(device)["host_load_1min"]) if x is not None]
        result["host_load_1min"] = max(loads, default=None)
    result["steps_per_epoch"] = len(batches)
    if profiler is not None:
        result["profile"] = profile_steps(step, batches, profiler, skip=warmup + steps)
    result.update(bench_data(batches, data_batches, device))
    if eval_users != 0:
        result.update(bench_eval(model, split.test, recipe, precision, compiler, device, eval_users))
    return result


MEASUREMENT_KEYS = ("host_load_1min", "host_cores", "gpu_gb_held_by_others", "compile_gave_up")


def machine_load(device: torch.device) -> dict[str, Any]:
    """What else is running: the host's 1-minute load average, and GPU memory that other
    processes hold on ``device``. Timings taken beside other work are not this setting's."""
    try:
        load_1min = os.getloadavg()[0]  # includes this process's own threads: warn only well above it
    except (AttributeError, OSError):
        load_1min = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = {"host_load_1min": load_1min, "host_cores": cores}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        # Our own context (~0.5 GB) is not in memory_reserved; count only what is clearly someone else's.
        load["gpu_gb_held_by_others"] = max(0.0, (total - free - torch.cuda.memory_reserved(device)) / 2**30 - 1.0)
    return load


def measurement_warnings(result: dict[str, Any]) -> list[str]:
    """One line per reason not to trust ``result`` as this setting's speed: the machine was
    shared while it was measured, or torch.compile gave up and the step ran eagerly."""
    lines = []
    if result.get("compile_gave_up"):
        lines.append("torch.compile hit its recompile limit and ran the step eagerly from then on: "
                     "set compiler.dynamic=true (one graph for all lengths) or raise compiler.recompile_limit")
    load, cores = result.get("host_load_1min"), result.get("host_cores")
    if load is not None and cores and load > cores / 2:
        lines.append(f"the host was busy (load {load:.1f} on {cores} cores): host-bound steps read slower than alone")
    if (result.get("gpu_gb_held_by_others") or 0) > 1.0:
        lines.append(f"other processes held {result['gpu_gb_held_by_others']:.1f} GB on this GPU: timings may be shared")
    return lines


def shape_of(batch: Batch) -> tuple:
    """What a compiled step specialises on: the trimmed batch and the masked-slot budget."""
    return tuple(batch.inputs.shape), tuple(batch.targets.shape)


def batch_stream(batches: ClozeBatches, skip: int) -> Iterator[Batch]:
    """Training batches epoch after epoch, from the ``skip``-th on. Batches are rebuilt from
    their seeds, so two streams with the same ``skip`` deliver the same batches."""
    return itertools.islice((batch for epoch in itertools.count() for batch in batches.epoch(epoch)), skip, None)


def warm_up_shapes(step: TrainStep, upcoming: Iterable[Batch], rounds: int = 3) -> int:
    """Run one batch of every shape in ``upcoming`` ``rounds`` times (compile, CUDA-graph
    record, replay), so that steps over those batches afterwards are steady state; return the
    number of shapes. Several rounds, because a later shape can make torch compile a more
    general graph, which then serves the earlier shapes too."""
    first_of_shape: dict[tuple, Batch] = {}
    for batch in upcoming:
        first_of_shape.setdefault(shape_of(batch), batch)
    for _ in range(rounds):
        for batch in first_of_shape.values():
            step(batch, step.cfg.lr)
    return len(first_of_shape)


def window_steps(profiler: Any) -> int:
    """How many steps a profiler needs to finish its window (wait + warm-up + active)."""
    return int(getattr(profiler, "steps_needed", 5))


def profile_steps(step: TrainStep, batches: ClozeBatches, profiler: Any, skip: int = 0) -> dict[str, Any]:
    """Run ``profiler``'s window (its wait + warm-up + active steps) over training steps, from
    the ``skip``-th batch on; return its summary. Every shape of the window runs first (see
    `warm_up_shapes`), so compiling is not counted as step time; on a step that has already
    run those shapes (the bench's), that costs no compile at all."""
    steps = window_steps(profiler)
    warm_up_shapes(step, itertools.islice(batch_stream(batches, skip), steps))
    with profiler:
        for batch in itertools.islice(batch_stream(batches, skip), steps):
            step(batch, step.cfg.lr)
            profiler.step()
    return getattr(profiler, "summary", {})


def compile_counters() -> dict[str, int]:
    """torch._dynamo's event counters (frames compiled, graphs, inductor events) as one flat dict."""
    from torch._dynamo.utils import counters

    return {f"{section}.{key}": int(value) for section, events in counters.items() for key, value in events.items()
            if isinstance(value, (int, float))}


def counter_changes(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The counters that moved between two `compile_counters()` snapshots, by how much."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def bench_steps(model, step: TrainStep, batches: ClozeBatches, steps: int, warmup: int, device: torch.device,
                low_precision: bool) -> dict[str, Any]:
    """The training step: median time after ``warmup`` steps, peak memory, FLOPs, MFU and floors.

    Before timing, every (length, masked-slot) shape that the timed window will meet runs
    three times (compile, CUDA-graph record, replay), so the timed steps are steady state
    even when batches differ in shape (`train.length_grouping`): a recompile or a graph
    recording inside the window would otherwise dominate the mean. ``distinct_shapes``
    says how many such one-time costs a run pays."""
    lr = step.cfg.lr
    stream = batch_stream(batches, 0)
    for _ in range(warmup):
        step(next(stream), lr)
    # A look ahead at the timed batches. They are rebuilt for timing (from their seeds) rather
    # than kept, so building each batch stays inside the timed loop, as it is in training.
    distinct_shapes = warm_up_shapes(step, itertools.islice(batch_stream(batches, warmup), steps))
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timer, timed = _Timer(device), []
    before = compile_counters()
    started = time.perf_counter()
    for batch in itertools.islice(batch_stream(batches, warmup), steps):
        timer.mark()
        step(batch, lr)
        timed.append(batch)
    timer.mark()
    after = compile_counters()
    times = timer.intervals_s()
    wall_s = time.perf_counter() - started
    step_s = statistics.median(times)

    flops = [train_flops(model, b) for b in timed]
    flops_per_step = statistics.mean(flops) if flops[0] is not None else None
    peak = peaks(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    peak_tflops = (peak[0] if low_precision else peak[1]) if peak else None
    optimizer_bytes = ADAMW_BYTES_PER_PARAM * count_parameters(model, trainable_only=True)
    return {
        "steps": steps,
        "warmup": warmup,
        "distinct_shapes": distinct_shapes,
        # torch.compile's own counters: what happened inside the timed window (should be nothing).
        "compile_events_in_window": counter_changes(before, after),
        "step_ms": step_s * 1000,
        "step_ms_min": min(times) * 1000,
        "step_ms_mean": statistics.mean(times) * 1000,
        "samples_per_s": batches.batch_size / step_s,
        # Over all timed steps: the epoch rate when batches differ in length (train.length_grouping),
        # where the median step is the most common length's, not the average.
        "samples_per_s_mean": sum(len(b) for b in timed) / sum(times),  # an epoch's last batch is short
        "end_to_end_samples_per_s": batches.batch_size * steps / wall_s,
        "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "real_tokens_per_step": statistics.mean(float((b.inputs != PAD).sum()) for b in timed),
        "padded_tokens_per_step": statistics.mean(float(b.inputs.numel()) for b in timed),
        "masked_per_step": statistics.mean(float((b.targets != IGNORE).sum()) for b in timed),
        "mask_slots_per_step": statistics.mean(float(b.targets.numel()) for b in timed),
        "flops_per_step": flops_per_step,
        "tflops": flops_per_step / step_s / 1e12 if flops_per_step else None,
        "peak_tflops": peak_tflops,
        "mfu": flops_per_step / step_s / (peak_tflops * 1e12) if flops_per_step and peak_tflops else None,
        "compute_floor_ms": flops_per_step / (peak_tflops * 1e12) * 1000 if flops_per_step and peak_tflops else None,
        "optimizer_bytes_per_step": optimizer_bytes,
        "optimizer_floor_ms": optimizer_bytes / (peak[2] * 1e12) * 1000 if peak else None,
    }


def bench_data(batches: ClozeBatches, count: int, device: torch.device) -> dict[str, Any]:
    """Batches built and delivered to the device per second, with no model in the loop."""
    if count <= 0:
        return {}
    it = (batch for epoch in itertools.count(10**6) for batch in batches.epoch(epoch))
    next(it)
    _sync(device)
    started = time.perf_counter()
    for _ in range(count):
        next(it)
    _sync(device)
    seconds = time.perf_counter() - started
    return {"data_batches_per_s": count / seconds, "data_samples_per_s": count * batches.batch_size / seconds}


def bench_eval(model, test, recipe: Recipe, precision, compiler, device: torch.device, users: int | None) -> dict[str, Any]:
    """Full-ranking evaluation users/s on the first ``users`` test users (after a warm-up batch)."""
    ev = recipe.eval
    rows = np.arange(min(users or len(test), len(test)))
    subset = test.subset(rows)
    scorer = compiler(model_scorer(model))
    kw = dict(max_len=model.max_len, mask_token=model.mask_token, ks=tuple(ev.ks), exclude_history=ev.exclude_history,
              batch_size=ev.batch_size, device=device)
    model.eval()
    with precision.autocast():
        evaluate(scorer, test.subset(rows[: min(len(rows), ev.batch_size)]), **kw)  # warm-up (compilation)
        _sync(device)
        started = time.perf_counter()
        evaluate(scorer, subset, **kw)
        _sync(device)
    seconds = time.perf_counter() - started
    model.train()
    return {"eval_users": len(rows), "eval_seconds": seconds, "eval_users_per_s": len(rows) / seconds}

