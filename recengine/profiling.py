"""Profiling a few training steps of a recipe, without a full training run.

``profile_recipe`` builds data, model and plugins exactly as training does and runs just
enough steps for the recipe's profiler (its wait + warm-up + active window) inside it.
It is the engine of `recengine profile` and of a study's profile pass.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch

from recengine.bench import batch_stream, warm_up_shapes
from recengine.recipe import Recipe
from recengine.tasks import training_batches
from recengine.training import TrainStep, adamw, build_model, load_data, resolve_device


def steps_to_run(profiler: Any, default: int = 5) -> int:
    """How many steps the profiler needs to finish its window."""
    return int(getattr(profiler, "steps_needed", default))


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
    steps = steps_to_run(profiler)
    # Every shape the window will meet is compiled (and CUDA-graph recorded) before it opens,
    # so compilation and autotuning are not counted as the step's CPU and CUDA time.
    warm_up_shapes(step, itertools.islice(batch_stream(batches, 0), steps))
    with profiler:
        for batch in itertools.islice(batch_stream(batches, 0), steps):
            step(batch, cfg.lr)
            profiler.step()
    return {"steps": steps, "steps_per_epoch": len(batches), "summary": getattr(profiler, "summary", {})}
