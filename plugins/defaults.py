"""The "feature off" plugins: fp32 precision, eager compiler, no adapter, no profiler.

They are registered like every other plugin so the training loop never special-cases a
missing feature: each is a no-op object.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from recengine.hookspecs import hookimpl


class FP32:
    def __init__(self, device: torch.device):
        self.scaler = torch.amp.GradScaler(device.type, enabled=False)

    def autocast(self):
        return nullcontext()


class NoAdapter:
    def adapt(self, model):
        return model

    def trainable_state(self, model):
        return model.state_dict()

    def for_export(self, model):
        return model

    def for_inference(self, model):
        return model


class NoProfiler:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def step(self) -> None:
        pass


def eager(options):
    return lambda fn: fn


@hookimpl
def register_precisions(register):
    register("fp32", lambda options, device: FP32(device))


@hookimpl
def register_compilers(register):
    register("eager", eager)


@hookimpl
def register_adapters(register):
    register("none", lambda options: NoAdapter())


@hookimpl
def register_profilers(register):
    register("none", lambda options, out_dir: NoProfiler())
