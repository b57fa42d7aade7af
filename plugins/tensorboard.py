"""Monitor `tensorboard`: scalars plus the run's hyperparameters with its final metrics
(the HParams tab), written under <run>/tensorboard."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from recengine.hookspecs import hookimpl


class TensorBoardOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flush_secs: int = Field(30, ge=1, description="How often the event file is flushed to disk.")


class TensorBoardMonitor:
    def __init__(self, log_dir: Path, flush_secs: int):
        from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

        self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=flush_secs)

    def log_scalars(self, step, values):
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def log_hparams(self, hparams, metrics):
        # run_name="." keeps the hparams summary in this run's own directory.
        self.writer.add_hparams(hparams, metrics, run_name=".")

    def close(self):
        self.writer.close()


@hookimpl
def register_monitors(register):
    register("tensorboard", lambda options, log_dir: TensorBoardMonitor(log_dir, options.flush_secs), options=TensorBoardOptions)
