"""The numerical guard: an optimizer step whose loss or gradient is not finite is skipped.

A NaN or inf that reaches ``optimizer.step()`` spreads into every weight and into Adam's
moments, and the run is silently lost. The guard looks at the loss and the global gradient
norm (which is non-finite exactly when some gradient is), skips the update when either is
not finite, warns, and counts. After ``max_bad_steps`` skipped steps in a row it stops the
run with a UserError: the weights in memory and every checkpoint on disk are still the
last good ones.

Cost: with a fused optimizer (AdamW on CUDA) and no loss scaling, the decision never
leaves the device: the optimizer's ``found_inf`` flag (the mechanism GradScaler uses)
makes the fused kernel skip the update, and the counts are read on the host only when the
loop asks for them (at log steps and checkpoints), so the step has no host sync. Elsewhere
(CPU, or fp16 loss scaling) one scalar is copied to the host per step: free on CPU.
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
        self._skipped = skipped  # steps skipped over the whole run (restored on resume)
        self.in_a_row = 0
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # on-device (skipped, run, longest run)
        self._window = 0  # steps decided on the device since the last check

    @property
    def skipped(self) -> int:
        self.check()
        return self._skipped

    def check(self) -> None:
        """Bring the on-device counts to the host: warn about skipped steps, stop after too many in a row."""
        if self._pending is None:
            return
        skipped, run, longest = (int(t) for t in self._pending)
        steps, self._pending, self._window = self._window, None, 0
        # A run of bad steps that fills the whole window continues the run before it.
        self.in_a_row = self.in_a_row + run if run == steps else run
        self._skipped += skipped
        if skipped:
            warnings.warn(f"{skipped} step(s) skipped: non-finite loss or gradient norm; {self._skipped} in this run",
                          NonFiniteStepWarning, stacklevel=2)
        if max(longest, self.in_a_row) >= self.max_bad_steps:
            raise UserError(self._stop_message(max(longest, self.in_a_row)))

    def _stop_message(self, in_a_row: int) -> str:
        return (f"training stopped: {in_a_row} steps in a row had a non-finite loss or gradient (train.max_bad_steps="
                f"{self.max_bad_steps}); no weight was updated by them and the checkpoints on disk are intact. "
                "Try a lower train.lr, more train.warmup_steps or fp32/bf16 precision, then --resume")

    def _deferred(self, optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
        optimizer.found_inf = bad.float()  # the fused kernel leaves params and moments untouched when set
        bad = bad.int()
        self._window += 1
        if self._pending is None:
            zero = torch.zeros((), dtype=torch.int32, device=bad.device)
            self._pending = (zero, zero, zero)
        skipped, run, longest = self._pending
        run = (run + 1) * bad
        self._pending = (skipped + bad, run, torch.maximum(longest, run))

    def step(self, scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool | None:
        """Step when ``loss`` and ``grad_norm`` are finite; return whether it stepped (None: decided on the device)."""
        if getattr(optimizer, "defaults", {}).get("fused") and not getattr(scaler, "is_enabled", lambda: True)():
            self._deferred(optimizer, ~torch.isfinite(loss.detach().float() + grad_norm.detach().float()))
            scaler.step(optimizer)
            return None
        # One fused check and one host copy: the sum is finite only if both terms are.
        if bool(torch.isfinite(loss.detach().float() + grad_norm.detach().float())):
            scaler.step(optimizer)
            self.in_a_row = 0
            return True
        self._skipped += 1
        self.in_a_row += 1
        warnings.warn(
            f"step skipped: non-finite loss ({loss.item():.4g}) or gradient norm ({grad_norm.item():.4g}); "
            f"{self.in_a_row} in a row, {self._skipped} in this run",
            NonFiniteStepWarning,
            stacklevel=2,
        )
        if self.in_a_row >= self.max_bad_steps:
            raise UserError(self._stop_message(self.in_a_row))
        return False
