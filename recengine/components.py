"""What each non-model plugin kind's factory returns.

Each feature that is off is a no-op object (``nullcontext``, ``GradScaler(enabled=False)``,
an identity compiler), so the training loop never branches on a feature.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Precision(Protocol):
    scaler: torch.amp.GradScaler  # GradScaler(enabled=False) when no loss scaling is needed

    def autocast(self) -> AbstractContextManager: ...


@runtime_checkable
class Compiler(Protocol):
    def __call__(self, fn: Callable) -> Callable:
        """Return a (possibly) compiled version of ``fn`` with the same signature."""


@runtime_checkable
class Adapter(Protocol):
    def adapt(self, model: nn.Module) -> nn.Module:
        """Return the model to train, with only the parameters to train requiring grad."""

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint must save to restore what was trained."""

    def for_export(self, model: nn.Module) -> nn.Module:
        """The model to export: as is (`none`), merged into a copy (`lora`), unmerged with its gate (`ilora`); ``model`` is left as is."""

    def for_inference(self, model: nn.Module) -> nn.Module:
        """The model `evaluate`/`recommend` use after loading (a merged copy when the adapter's merge option is on)."""


@runtime_checkable
class Profiler(Protocol):
    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: Any) -> Any: ...
    def step(self) -> None: ...


@runtime_checkable
class Monitor(Protocol):
    def log_scalars(self, step: int, values: dict[str, float]) -> None: ...
    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None: ...
    def close(self) -> None: ...


class Monitors:
    """Fans every call out to each monitor the recipe lists (none is fine)."""

    def __init__(self, monitors: list[Monitor]):
        self.monitors = monitors

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        for m in self.monitors:
            m.log_scalars(step, values)

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        for m in self.monitors:
            m.log_hparams(hparams, metrics)

    def close(self) -> None:
        for m in self.monitors:
            m.close()
