"""Monitor `tensorboard`: scalars plus the run's hyperparameters with its final metrics
(the HParams tab), written under <run>/tensorboard. It adds what the loop does not send:
GPU memory beside every training scalar, and the hardware (Text tab) once at the start."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from pydantic import BaseModel, ConfigDict, Field

from recengine.hookspecs import hookimpl


class TensorBoardOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flush_secs: int = Field(30, ge=1, description="How often the event file is flushed to disk.")
    gpu_memory: bool = Field(True, description="Log allocated and peak GPU memory (MiB) with the training scalars (CUDA only).")
    hardware: bool = Field(True, description="Write the GPU/CPU, torch/CUDA versions and git commit to the Text tab.")


def cuda_memory_mb() -> dict[str, float]:
    return {"system/gpu_memory_allocated_mb": torch.cuda.memory_allocated() / 2**20,
            "system/gpu_memory_reserved_mb": torch.cuda.memory_reserved() / 2**20,
            "system/gpu_memory_peak_mb": torch.cuda.max_memory_allocated() / 2**20}


class TensorBoardMonitor:
    def __init__(self, log_dir: Path, flush_secs: int, memory: Callable[[], dict[str, float]] | None = None,
                 hardware: dict | None = None):
        """``memory`` returns the memory scalars to log (None: none, e.g. on CPU)."""
        from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

        self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=flush_secs)
        self.memory = memory
        if hardware:
            from recengine.hardware import hardware_markdown

            self.writer.add_text("hardware", hardware_markdown(hardware), 0)

    def log_scalars(self, step, values):
        if self.memory is not None and any(name.startswith("train/") for name in values):
            values = {**values, **self.memory()}
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def log_hparams(self, hparams, metrics):
        # run_name="." keeps the hparams summary in this run's own directory.
        self.writer.add_hparams(hparams, metrics, run_name=".")

    def close(self):
        self.writer.close()


def tensorboard_monitor(options: TensorBoardOptions, log_dir: Path) -> TensorBoardMonitor:
    from recengine.hardware import hardware_info

    memory = cuda_memory_mb if options.gpu_memory and torch.cuda.is_available() else None
    return TensorBoardMonitor(log_dir, options.flush_secs, memory, hardware_info() if options.hardware else None)


@hookimpl
def register_monitors(register):
    register("tensorboard", tensorboard_monitor, options=TensorBoardOptions)
