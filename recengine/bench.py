"""Timing training steps of a recipe: the engine behind `recengine bench` and studies.

``bench_recipe(recipe)`` builds the recipe's data, model and plugins exactly as training
does, runs ``warmup`` untimed steps, then times ``steps`` steps and reports the median.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

import torch

from recengine.model import count_parameters
from recengine.recipe import Recipe
from recengine.tasks import training_batches
from recengine.training import TrainStep, adamw, build_model, load_data, resolve_device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_recipe(recipe: Recipe, steps: int = 20, warmup: int = 5) -> dict[str, Any]:
    """Median step time, samples/s and peak memory of ``recipe``'s training step."""
    torch.manual_seed(recipe.run.seed)
    device = resolve_device(recipe.run.device)
    dataset, split = load_data(recipe)
    model, _ = build_model(recipe, dataset.num_items)
    model.to(device).train()
    cfg = recipe.train
    step = TrainStep(model, adamw(model, cfg.lr, cfg.weight_decay, cfg.betas, device),
                     recipe.precision.build(device=device), recipe.compiler.build(), cfg, item_counts=split.train.item_counts())
    batches = training_batches(model, split.train, cfg, recipe.run.seed, device)
    stream = (batch for epoch in range(10**9) for batch in batches.epoch(epoch))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        batch = next(stream)
        _sync(device)
        started = time.perf_counter()
        step(batch, cfg.lr)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    step_s = statistics.median(times)
    return {
        "recipe": recipe.run.name,
        "precision": recipe.precision.name,
        "compiler": recipe.compiler.name,
        "adapter": recipe.adapter.name,
        "batch_size": cfg.batch_size,
        "parameters": count_parameters(model),
        "trainable_parameters": count_parameters(model, trainable_only=True),
        "step_ms": step_s * 1000,
        "samples_per_s": cfg.batch_size / step_s,
        "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "device": device_name(device),
        "torch": torch.__version__,
    }
