"""The numerical guard: an optimizer step whose loss or gradient is not finite is skipped.

A NaN or inf that reaches ``optimizer.step()`` spreads into every weight and into Adam's
moments, and the run is silently lost. The guard looks at the loss and the global gradient
norm (which is non-finite exactly when some gradient is), skips the update when either is
not finite, warns, and counts. After ``max_bad_steps`` skipped steps in a row it stops the
run with a UserError: the weights in memory and every checkpoint on disk are still the
last good ones.

Cost: deciding whether to step needs the answer on the host, so there is one scalar
device-to-host copy per step (free on CPU; on CUDA it drains the queue once per step,
which GradScaler already does whenever fp16 loss scaling is on). Deferring the check to
log steps would let bad updates through, so correctness wins here.
"""

from __future__ import annotations

import warnings

import torch

from recengine.errors import UserError


class NonFiniteStepWarning(UserWarning):
    """A training step was skipped because its loss or gradient was NaN or infinite."""


class NonFiniteGuard:
    """Applies ``scaler.step(optimizer)`` only for finite steps; counts the others."""

    def __init__(self, max_bad_steps: int, skipped: int = 0):
        self.max_bad_steps = max_bad_steps
        self.skipped = skipped  # steps skipped over the whole run (restored on resume)
        self.in_a_row = 0
        self.calls = 0

    def step(self, scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Step when ``loss`` and ``grad_norm`` are finite; return whether it stepped."""
        self.calls += 1
        # One fused check and one host copy: the sum is finite only if both terms are.
        if bool(torch.isfinite(loss.detach().float() + grad_norm.detach().float())):
            scaler.step(optimizer)
            self.in_a_row = 0
            return True
        self.skipped += 1
        self.in_a_row += 1
        warnings.warn(
            f"step skipped: non-finite loss ({loss.item():.4g}) or gradient norm ({grad_norm.item():.4g}); "
            f"{self.in_a_row} in a row, {self.skipped} in this run",
            NonFiniteStepWarning,
            stacklevel=2,
        )
        if self.in_a_row >= self.max_bad_steps:
            raise UserError(
                f"training stopped: {self.in_a_row} steps in a row had a non-finite loss or gradient (train.max_bad_steps="
                f"{self.max_bad_steps}); no weight was updated by them and the checkpoints on disk are intact. "
                "Try a lower train.lr, more train.warmup_steps or fp32/bf16 precision, then --resume"
            )
        return False
