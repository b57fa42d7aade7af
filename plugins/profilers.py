"""Profilers `torch` (torch.profiler over a window of steps) and `memory` (a CUDA memory snapshot).

`torch` records CPU activity (and CUDA activity when a GPU is present), shapes and memory
over ``wait`` skipped, ``warmup`` discarded and ``active`` recorded steps. It writes
    <out>/*.pt.trace.json        for TensorBoard's profiler view (tensorboard_trace_handler)
    <out>/chrome-trace-*.json    for chrome://tracing or https://ui.perfetto.dev
    <out>/summary.json, .txt     top operators, step time, total self CUDA time, peak memory
and prints the summary when the profiled block ends. Without a GPU it ranks by self CPU time.

`memory` records CUDA allocator history for ``active`` steps and writes
<out>/memory-snapshot.pickle, the file https://pytorch.org/memory_viz reads. It needs CUDA.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table

from recengine.checkpoint import atomic_write_text
from recengine.errors import UserError
from recengine.hookspecs import hookimpl


class TorchProfilerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    wait: int = Field(1, ge=0, description="Steps skipped before profiling starts.")
    warmup: int = Field(1, ge=0, description="Steps profiled but discarded (profiler start-up cost).")
    active: int = Field(3, ge=1, description="Steps recorded.")
    record_shapes: bool = Field(True, description="Record operator input shapes.")
    profile_memory: bool = Field(True, description="Record tensor allocations per operator.")
    with_stack: bool = Field(False, description="Record Python stacks (large traces; for flame graphs).")
    tensorboard: bool = Field(True, description="Write a trace for TensorBoard's profiler view.")
    chrome_trace: bool = Field(True, description="Write a Chrome trace JSON (chrome://tracing, Perfetto).")
    top: int = Field(15, ge=1, description="Operators listed in the summary.")
    print_summary: bool = Field(True, description="Print the summary on stderr when profiling ends.")


class MemoryProfilerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    active: int = Field(3, ge=1, description="Steps recorded before the snapshot is written.")
    max_entries: int = Field(100_000, ge=1, description="Allocator events kept (oldest dropped first).")


def _device_time(event) -> float:
    # `self_device_time_total` replaced `self_cuda_time_total` in torch 2.4; both in microseconds.
    return float(getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0)) or 0.0)


def host_ops(events) -> list[dict[str, Any]]:
    """The operators launched from the host, each with its own CPU time and the GPU time of the
    kernels it launched. Kernel events are left out: their time is already their operator's."""
    return [{"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1000, "self_cuda_ms": _device_time(e) / 1000}
            for e in events if e.device_type == DeviceType.CPU and not e.key.startswith("ProfilerStep")]


def kernel_time_ms(events) -> float:
    """GPU time as the kernels record it, once (as torch's own table totals it): device events,
    without the user-annotation ranges that span them."""
    return sum(_device_time(e) for e in events
               if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)) / 1000


class TorchProfiler:
    """Context manager around torch.profiler.profile; ``step()`` after every training step."""

    def __init__(self, options: TorchProfilerOptions, out_dir: Path):
        self.options, self.out_dir = options, Path(out_dir)
        self.cuda = torch.cuda.is_available()
        self.summary: dict[str, Any] = {}
        self.profile: torch.profiler.profile | None = None
        self.stamps: list[float] = []

    @property
    def steps_needed(self) -> int:
        return self.options.wait + self.options.warmup + self.options.active

    def _on_trace_ready(self, prof: torch.profiler.profile) -> None:
        # A trace can be exported only once: export it, then copy it for the other viewer.
        # TensorBoard's profiler plugin finds traces by the name tensorboard_trace_handler uses.
        paths = []
        if self.options.tensorboard:
            paths.append(self.out_dir / f"{socket.gethostname()}_{os.getpid()}.{time.time_ns()}.pt.trace.json")
        if self.options.chrome_trace:
            paths.append(self.out_dir / f"chrome-trace-step{prof.step_num}.json")
        if not paths:
            return
        tmp = self.out_dir / f".trace-{os.getpid()}.tmp"
        prof.export_chrome_trace(str(tmp))
        for path in paths[1:]:
            shutil.copyfile(tmp, path)
        tmp.replace(paths[0])

    def __enter__(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
            torch.cuda.reset_peak_memory_stats()
        o = self.options
        self.profile = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=o.wait, warmup=o.warmup, active=o.active, repeat=1),
            on_trace_ready=self._on_trace_ready,
            record_shapes=o.record_shapes,
            profile_memory=o.profile_memory,
            with_stack=o.with_stack,
        )
        self.profile.__enter__()
        self.stamps = [self._now()]
        return self

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()  # kernels run asynchronously: wait for them before reading the clock
        return time.perf_counter()

    def step(self) -> None:
        if self.profile is None:
            return
        # Step k runs between stamps[k] and stamps[k + 1]; only the active window is timed.
        if len(self.stamps) <= self.steps_needed:
            self.stamps.append(self._now())
        self.profile.step()

    def __exit__(self, *exc):
        profile, self.profile = self.profile, None
        profile.__exit__(*exc)
        if exc[0] is None:
            self.summary = self._summarise(profile)
            atomic_write_text(self.out_dir / "summary.json", json.dumps(self.summary, indent=1))
            atomic_write_text(self.out_dir / "summary.txt", self._render(Console(record=True, width=140, file=io.StringIO())))
            if self.options.print_summary:
                self._render(Console(stderr=True))
        return False

    def _summarise(self, profile: torch.profiler.profile) -> dict[str, Any]:
        o = self.options
        first = o.wait + o.warmup
        durations = [b - a for a, b in zip(self.stamps[first:], self.stamps[first + 1:])][: o.active]
        recorded = len(durations)
        if recorded == 0:
            return {"recorded_steps": 0, "note": f"fewer than {self.steps_needed} steps ran; nothing was recorded"}
        events = profile.key_averages()
        rank_by = "self_cuda_ms" if self.cuda else "self_cpu_ms"
        ops = host_ops(events)
        ops.sort(key=lambda op: op[rank_by], reverse=True)
        return {
            "device": "cuda" if self.cuda else "cpu",
            "ranked_by": rank_by,
            "recorded_steps": recorded,
            "step_ms": statistics.median(durations) * 1000,
            "self_cpu_ms_per_step": sum(op["self_cpu_ms"] for op in ops) / recorded,
            "self_cuda_ms_per_step": kernel_time_ms(events) / recorded if self.cuda else None,
            "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None,
            "top_ops": ops[: o.top],
            "out_dir": str(self.out_dir),
        }

    def _render(self, console: Console) -> str:
        s = self.summary
        if not s.get("recorded_steps"):
            console.print(f"profiler: {s.get('note', 'nothing recorded')}")
            return console.export_text() if console.record else ""
        cuda = s["device"] == "cuda"
        table = Table(title=f"Top operators by {'self CUDA' if cuda else 'self CPU'} time over {s['recorded_steps']} steps")
        for column in ("operator", "calls", "self CPU ms", "self CUDA ms"):
            table.add_column(column, justify="left" if column == "operator" else "right")
        for op in s["top_ops"]:
            table.add_row(op["name"], str(op["calls"]), f"{op['self_cpu_ms']:.2f}", f"{op['self_cuda_ms']:.2f}" if cuda else "-")
        console.print(table)
        console.print(f"step time (median): {s['step_ms']:.2f} ms")
        console.print(f"total self CPU time per step: {s['self_cpu_ms_per_step']:.2f} ms")
        if cuda:
            console.print(f"total self CUDA time per step: {s['self_cuda_ms_per_step']:.2f} ms")
            console.print(f"peak CUDA memory: {s['peak_memory_mb']:.1f} MiB")
        else:
            console.print("self CUDA time and peak GPU memory: n/a (no CUDA device; ranked by self CPU time)")
        console.print(f"traces in {s['out_dir']} (TensorBoard: recengine tensorboard {s['out_dir']}; Chrome: chrome-trace-*.json)")
        return console.export_text() if console.record else ""


class MemorySnapshot:
    """Records CUDA allocator history for ``active`` steps, then writes the snapshot pickle."""

    def __init__(self, options: MemoryProfilerOptions, out_dir: Path, memory=None):
        # `memory` is torch.cuda.memory; a test passes a stand-in to check the step logic.
        self.options, self.out_dir = options, Path(out_dir)
        self.memory = memory or torch.cuda.memory
        self.steps, self.recording = 0, False
        self.path = self.out_dir / "memory-snapshot.pickle"

    def __enter__(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.memory._record_memory_history(max_entries=self.options.max_entries)
        self.recording = True
        return self

    def step(self) -> None:
        self.steps += 1
        if self.recording and self.steps >= self.options.active:
            self._dump()

    def _dump(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        self.memory._dump_snapshot(str(tmp))
        tmp.replace(self.path)
        self.memory._record_memory_history(enabled=None)  # stop recording: it slows every allocation
        self.recording = False
        Console(stderr=True).print(f"memory snapshot of {self.steps} steps: {self.path} (open it at https://pytorch.org/memory_viz)")

    def __exit__(self, *exc):
        if self.recording:
            self._dump()
        return False


def memory_snapshot(options: MemoryProfilerOptions, out_dir: Path) -> MemorySnapshot:
    if not torch.cuda.is_available():
        raise UserError("profiler 'memory' records the CUDA allocator and needs a CUDA GPU; "
                        "none is available here. On CPU use the torch profiler (`--profiler torch`, or profiler.name=\"torch\" "
                        "in the recipe); it ranks by self CPU time")
    return MemorySnapshot(options, out_dir)


@hookimpl
def register_profilers(register):
    register("torch", lambda options, out_dir: TorchProfiler(options, out_dir), options=TorchProfilerOptions)
    register("memory", memory_snapshot, options=MemoryProfilerOptions)
