import json
from pathlib import Path

import pytest
import torch
from torch.autograd import DeviceType

from recengine.errors import UserError
from recengine.plugins import load_registry
from recengine.profiling import profile_recipe
from recengine.recipe import load_recipe
from recengine_plugins.profilers import (MemoryProfilerOptions, MemorySnapshot, TorchProfiler, TorchProfilerOptions, host_ops,
                                         kernel_time_ms, memory_snapshot)

TINY = Path(__file__).parents[2] / "studies" / "recipes" / "tiny.toml"


def test_torch_profiler_writes_traces_and_a_cpu_summary(tmp_path):
    profiler = TorchProfiler(TorchProfilerOptions(wait=1, warmup=1, active=2, print_summary=False), tmp_path)
    x = torch.randn(64, 64)
    with profiler:
        for _ in range(profiler.steps_needed + 2):  # extra steps after the window are not recorded
            (x @ x).relu().sum()
            profiler.step()
    assert len(list(tmp_path.glob("*.pt.trace.json"))) == 1  # TensorBoard's profiler view
    (chrome,) = tmp_path.glob("chrome-trace-*.json")
    assert json.loads(chrome.read_text())["traceEvents"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["recorded_steps"] == 2 and summary["ranked_by"] == "self_cpu_ms"
    assert summary["step_ms"] > 0 and summary["self_cpu_ms_per_step"] > 0
    if not torch.cuda.is_available():
        assert summary["self_cuda_ms_per_step"] is None and summary["peak_memory_mb"] is None
        assert "n/a (no CUDA device" in (tmp_path / "summary.txt").read_text()
    names = [op["name"] for op in summary["top_ops"]]
    assert "aten::mm" in names
    times = [op["self_cpu_ms"] for op in summary["top_ops"]]
    assert times == sorted(times, reverse=True)


def test_profile_recipe_runs_just_the_window(tmp_path):
    recipe = load_recipe(TINY, load_registry(), ['profiler={name="torch", wait=0, warmup=1, active=1, print_summary=false}'])
    result = profile_recipe(recipe, tmp_path)
    assert result["steps"] == 2 and result["steps_per_epoch"] == 10  # 300 users / batch 32
    assert result["summary"]["recorded_steps"] == 1
    assert any(op["name"].startswith("aten::") for op in result["summary"]["top_ops"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_memory_profiler_says_it_needs_cuda(tmp_path):
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        memory_snapshot(MemoryProfilerOptions(), tmp_path)


class FakeCudaMemory:
    def __init__(self):
        self.calls = []

    def _record_memory_history(self, enabled="all", max_entries=0):
        self.calls.append(("record", enabled))

    def _dump_snapshot(self, path):
        self.calls.append(("dump",))
        Path(path).write_bytes(b"snapshot")


def test_memory_snapshot_records_active_steps_then_stops(tmp_path):
    memory = FakeCudaMemory()
    with MemorySnapshot(MemoryProfilerOptions(active=2), tmp_path, memory=memory) as snapshot:
        for _ in range(4):
            snapshot.step()
    assert memory.calls == [("record", "all"), ("dump",), ("record", None)]
    assert (tmp_path / "memory-snapshot.pickle").read_bytes() == b"snapshot"


def test_gpu_time_is_counted_once():
    # key_averages() lists an operator (with the GPU time of the kernels it launched), the kernels
    # themselves, and user-annotation ranges spanning them: the total must count the kernels once.
    from types import SimpleNamespace

    def event(key, device, self_device_us, cpu_us=0.0, annotation=False):
        return SimpleNamespace(key=key, count=1, device_type=device, self_device_time_total=self_device_us,
                               self_cpu_time_total=cpu_us, is_user_annotation=annotation)

    events = [event("aten::mm", DeviceType.CPU, 5000, cpu_us=40), event("ampere_gemm_kernel", DeviceType.CUDA, 5000),
              event("aten::add", DeviceType.CPU, 1000, cpu_us=20), event("elementwise_kernel", DeviceType.CUDA, 1000),
              event("Optimizer.step#AdamW.step", DeviceType.CUDA, 7000, annotation=True),
              event("ProfilerStep#3", DeviceType.CPU, 0, cpu_us=100)]
    assert kernel_time_ms(events) == 6.0
    assert [op["name"] for op in host_ops(events)] == ["aten::mm", "aten::add"]
    assert sum(op["self_cuda_ms"] for op in host_ops(events)) == 6.0
