"""Accuracy runs: train recipes and print one results row each, protocol included.

    .venv/bin/python benchmarks/accuracy.py recipes/bert4rec-videogames.toml [more recipes] \
        [--set run.device=cuda] [--output-dir runs/accuracy] [--full-too]

Each row states the dataset, model, protocol, test HR@10 / NDCG@10, the epochs run, the
epoch the best checkpoint was selected at, the device and the torch version: everything
docs/results.md asks for. With --full-too, a run trained under the sampled protocol is also
evaluated with full ranking (the same best checkpoint), so both numbers sit side by side.

Interrupted (Ctrl-C, or `timeout --signal=INT`), the run's row comes from its best checkpoint so
far, marked ``"interrupted": true``, and the recipes after it are not run; a run interrupted
before its first validation has no best checkpoint and gets no row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recengine import checkpoint
from recengine.hardware import hardware_info
from recengine.plugins import load_registry
from recengine.recipe import Recipe, load_recipe
from recengine.runs import RunDir
from recengine.training import build_model, eval_negatives, evaluate_splits, load_data, load_weights, release, resolve_device, train


def evaluate_best(recipe: Recipe, run: RunDir) -> dict:
    """Test metrics of the run's best checkpoint under ``recipe``'s protocol (its stored negatives
    when sampled), plus the epochs run and the epoch it was selected at."""
    device = resolve_device(recipe.run.device)
    dataset, split = load_data(recipe)
    model, adapter = build_model(recipe, dataset.num_items)
    load_weights(run, model, adapter, "best")
    model.to(device).eval()
    results = evaluate_splits(recipe, model, split, ["test"], recipe.precision.build(device=device), device, None,
                              eval_negatives(recipe, run, dataset, split))
    best = checkpoint.load_state(run.checkpoint("best"))["loop"]
    latest = checkpoint.load_state(run.checkpoint("latest"))["loop"]
    return {**results, "best_epoch": best["best_epoch"], "epochs_run": latest["epoch"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="+", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="Override, e.g. run.device=cuda.")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/accuracy"))
    parser.add_argument("--full-too", action="store_true", help="Also evaluate sampled-protocol runs with full ranking.")
    args = parser.parse_args()
    registry = load_registry()
    for path in args.recipes:
        release()  # each recipe compiles afresh (see training.release)
        recipe = load_recipe(path, registry, args.overrides)
        run = RunDir(args.output_dir / path.stem)
        run.path.mkdir(parents=True, exist_ok=True)
        (run.path / "recipe.toml").write_text(recipe.to_toml())
        try:
            results, interrupted = train(recipe, run), False
        except KeyboardInterrupt:
            # The `best` pointer is set by a validation; a step checkpoint alone was never validated.
            if checkpoint.read_pointer(run.checkpoints, "best") is None:
                print(f"{path}: interrupted before its first validation; no row", file=sys.stderr)
                sys.exit(130)  # the shell's code for an interrupt, without a traceback
            print(f"{path}: interrupted; evaluating its best checkpoint so far", file=sys.stderr)
            results, interrupted = evaluate_best(recipe, run), True
        row = {"recipe": str(path), "model": recipe.model.name, "protocol": results["protocol"],
               "test_hr@10": results["test"]["model"]["hr@10"], "test_ndcg@10": results["test"]["model"]["ndcg@10"],
               "popularity_test_ndcg@10": results["test"]["popularity"]["ndcg@10"],
               "epochs_run": results["epochs_run"], "best_epoch": results["best_epoch"], "interrupted": interrupted,
               **hardware_info(resolve_device(recipe.run.device))}  # device, torch, CUDA, commit...
        if args.full_too and recipe.eval.protocol != "full":
            full = evaluate_best(load_recipe(path, registry, args.overrides + ['eval.protocol="full"']), run)
            row.update({"full_protocol": full["protocol"], "full_test_hr@10": full["test"]["model"]["hr@10"],
                        "full_test_ndcg@10": full["test"]["model"]["ndcg@10"]})
        print(json.dumps(row))
        with open(args.output_dir / "accuracy.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if interrupted:
            print("stopped: the recipes after it were not run", file=sys.stderr)
            break


if __name__ == "__main__":
    main()
