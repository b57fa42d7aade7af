"""An exponential moving average of the trainable weights (``train.ema_decay``).

Validation runs on the average, and a checkpoint's ``model.safetensors`` holds it, so the best
checkpoint and everything that loads a run (evaluate, recommend, export, fine-tuning from a base
run) use the averaged weights without knowing about them. Training itself continues from the raw
weights, which a checkpoint keeps in ``raw.safetensors`` for resuming.

Off (``ema_decay = 0``) it is `NoAverage`, which does nothing, so the loop has no branch for it.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

import torch
from torch import nn

MODEL_FILE = "model.safetensors"
RAW_FILE = "raw.safetensors"  # the raw training weights, in checkpoints written with the average on

StateFn = Callable[[], dict[str, torch.Tensor]]


class WeightAverage:
    """The average of ``model``'s trainable parameters (those with requires_grad: under an adapter,
    the adapter's alone), kept in float32 on the parameters' device (as DTensor shards under FSDP2,
    where each rank averages its own shard; under DDP every rank applies the same update to the
    same replica).

    ``on_swap`` is called whenever the parameters' values are replaced (see `swapped`): under FSDP2
    it drops the gathered copy that the root module keeps after a no-grad forward, which would
    otherwise still hold the other values at the next forward."""

    def __init__(self, model: nn.Module, decay: float, on_swap: Callable[[], None] = lambda: None):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay, self.on_swap = decay, on_swap
        self.params = [p for p in model.parameters() if p.requires_grad]
        with torch.no_grad():
            self.average = [p.detach().to(torch.float32, copy=True) for p in self.params]

    def update(self, step: int) -> None:
        """Move the average towards the weights after optimizer step ``step`` (1 for the first).

        The decay warms up as (1 + step) / (10 + step) until it reaches ``decay`` (TensorFlow's
        ExponentialMovingAverage with num_updates): the average starts at the random initial
        weights, and at a fixed 0.999 they would still weigh 0.999^1000 = 37% after 1,000 steps,
        so early validations would score a blend dominated by the init. While warming up, the average
        spans roughly the last step/9 steps (1 / (1 - decay) = (10 + step) / 9) until the decay
        reaches ``decay`` (0.9 at step 80, 0.99 at step 890, 0.999 at step 8,991: in a shorter
        run 0.99 and 0.999 are the same average), and the init's weight is below 1e-7 by step 30."""
        decay = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            # .float() is the parameter itself when it is float32 already (no copy per step).
            torch._foreach_lerp_(self.average, [p.float() for p in self.params], 1.0 - decay)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The averaged values in the model's parameters for the body; the raw ones back after it,
        exactly, also when the body raises."""
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.params]
            for p, a in zip(self.params, self.average):
                p.copy_(a)
        self.on_swap()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.params, raw):
                    p.copy_(r)
            self.on_swap()

    def reset(self) -> None:
        """Start the average again from the model's current values (on resume: the averaged
        weights just loaded from the checkpoint's model.safetensors)."""
        with torch.no_grad():
            for a, p in zip(self.average, self.params):
                a.copy_(p)

    def checkpoint_weights(self, model_state: StateFn) -> dict[str, dict[str, torch.Tensor]]:
        """A checkpoint's weight files, given ``model_state()`` (the model's tensors to save, a
        collective under FSDP2): the average as model.safetensors, the raw weights as raw.safetensors."""
        with self.swapped():
            # Copied: on one process the state's tensors share the parameters' storage, which the swap back overwrites.
            averaged = {k: v.to("cpu", copy=True) for k, v in model_state().items()}
        return {MODEL_FILE: averaged, RAW_FILE: model_state()}


class NoAverage:
    """``ema_decay = 0``: no average; validation and checkpoints use the weights as trained."""

    def update(self, step: int) -> None:
        pass

    def swapped(self):
        return nullcontext()

    def reset(self) -> None:
        pass

    def checkpoint_weights(self, model_state: StateFn) -> dict[str, dict[str, torch.Tensor]]:
        return {MODEL_FILE: model_state()}


def weight_average(model: nn.Module, decay: float, on_swap: Callable[[], None] = lambda: None) -> WeightAverage | NoAverage:
    """A `WeightAverage` of ``model``'s trainable parameters, or `NoAverage` for ``decay = 0``.
    Build it once the parameters are final: after the adapter froze the base and after FSDP2
    replaced them with sharded ones."""
    return WeightAverage(model, decay, on_swap) if decay > 0 else NoAverage()
