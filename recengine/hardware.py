"""What a result was measured on: accelerator and CPU, library versions, recengine's commit.

Every training run, bench record and study result carries this, so tables from different machines
(H100, H200, a laptop CPU) can be put side by side and told apart.
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

import recengine


def cpu_name() -> str:
    # platform.processor() is empty on most Linux systems; /proc/cpuinfo has the marketing name.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit recengine's source is at (with ``-dirty`` for local changes); None outside a checkout."""
    source = Path(recengine.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=5)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hardware_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """The machine and software a result comes from. ``device`` names the one measured
    (default: CUDA when available); ``device`` in the result is a readable name."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda" and torch.cuda.is_available()
    gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {
        "device": torch.cuda.get_device_name(device) if on_gpu else cpu_name(),
        "device_type": "cuda" if on_gpu else device.type,
        "gpu_name": torch.cuda.get_device_name(0) if gpu_count else None,
        "gpu_count": gpu_count,
        "cpu_name": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "recengine": recengine.__version__,
        "commit": git_commit(),
    }


def hardware_markdown(info: dict[str, Any]) -> str:
    """A two-column markdown table (TensorBoard's text tab renders it)."""
    rows = "\n".join(f"| {key} | {value} |" for key, value in info.items())
    return "| what | value |\n|---|---|\n" + rows
