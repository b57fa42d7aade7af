"""Profiling a few training steps of a recipe, without a full training run.

``profile_recipe`` builds data, model and plugins exactly as training does and runs just
enough steps for the recipe's profiler (its wait + warm-up + active window) inside it.
It is the engine of `recengine profile`; a study profiles inside `bench_recipe` instead, on the
benched (already compiled) step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from recengine.bench import profile_steps, window_steps
from recengine.recipe import Recipe
from recengine.tasks import training_batches
from recengine.training import TrainStep, adamw, build_model, load_data, resolve_device


def profile_recipe(recipe: Recipe, out_dir: Path) -> dict[str, Any]:
    """Run the recipe's profiler over its window of training steps; return its summary
    (the `torch` profiler's top operators, step time...) and the steps per epoch."""
    torch.manual_seed(recipe.run.seed)
    device = resolve_device(recipe.run.device)
    dataset, split = load_data(recipe)
    model, _ = build_model(recipe, dataset.num_items)
    model.to(device).train()
    cfg = recipe.train
    step = TrainStep(model, adamw(model, cfg.lr, cfg.weight_decay, cfg.betas, device),
                     recipe.precision.build(device=device), recipe.compiler.build(), cfg, item_counts=split.train.item_counts())
    batches = training_batches(model, split.train, cfg, recipe.run.seed, device)
    profiler = recipe.profiler.build(out_dir=Path(out_dir))
    summary = profile_steps(step, batches, profiler)
    return {"steps": window_steps(profiler), "steps_per_epoch": len(batches), "summary": summary}
