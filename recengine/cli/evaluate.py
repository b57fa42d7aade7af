"""`recengine evaluate`: evaluate a trained run on the validation or test split."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from recengine.cli._common import console, err_console, metrics_table, user_errors
from recengine.inference import load_run_recipe
from recengine.plugins import load_registry
from recengine.runs import RunDir
from recengine.training import build_model, eval_negatives, evaluate_splits, load_data, load_weights, resolve_device


class Split(str, Enum):
    valid = "valid"
    test = "test"


@user_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory made by `recengine train`."),
    split: Split = typer.Option(Split.test, "--split", help="Which held-out item to rank."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="'best', 'latest' or a step-XXXXXXXX directory."),
) -> None:
    """Rank under the recipe's protocol (full catalog or stored sampled negatives) and report HR@K, NDCG@K, MRR, Recall@K and coverage@K beside the popularity baseline."""
    run = RunDir.open(run_dir)
    recipe = load_run_recipe(run, load_registry())
    device = resolve_device(recipe.run.device)
    dataset, data = load_data(recipe)
    model, adapter = build_model(recipe, dataset.num_items, run)
    load_weights(run, model, adapter, checkpoint)
    model = adapter.for_inference(model).to(device).eval()
    results = evaluate_splits(recipe, model, data, [split.value], recipe.precision.build(device=device), device, err_console,
                              eval_negatives(recipe, run, dataset, data))
    console.print(metrics_table(results, [split.value], recipe.eval.ks))
