"""Does adaptation work? Base on an earlier period, adapted to a later one.

Synthetic (`--size`): a base BERT4Rec is trained on the synthetic dataset's phase 0; the
later period is phase 1 of the same catalog (half the items' successors rewired, new
users), evaluated leave-one-out.

Real file (`--data ml-latest-small`): one timestamped file, the global temporal split
(`eval.split = "temporal"`) at two pairs of time quantiles. The base trains on the
interactions before the earlier pair's first quantile (validated on the window up to its
second); the later period's runs train on everything before the later pair's first
quantile, are validated on the window up to its second and tested after it. Same file and
preprocessing in every run, so the catalog (item ids) is the same and the base loads.

On the later period's validation/test split (full ranking) we compare:

  frozen base | full fine-tuning | LoRA | iLoRA

with trainable parameters, median step time and peak memory of one training step.
Step time and memory come from `recengine.bench.bench_recipe` in a fresh process per
variant (on CPU, memory is the process's peak RSS; on CUDA, torch's peak allocation).

    .venv/bin/python benchmarks/adaptation.py --size small --device cpu
    .venv/bin/python benchmarks/adaptation.py --data ml-latest-small --data-path ../shared/data/ml-latest-small-ratings.csv
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import resource
import shutil
import time
from pathlib import Path

import torch
from rich.console import Console

from recengine.bench import bench_recipe
from recengine.model import count_parameters
from recengine.plugins import load_registry
from recengine.recipe import resolve
from recengine.runs import RunDir
from recengine.training import build_model, evaluate_splits, load_data, release, resolve_device, train

SIZES = {
    "small": dict(users=1500, later_users=600, items=300, hidden=64, layers=2, heads=2, max_len=30, epochs=25, adapt_epochs=15),
    "medium": dict(users=20000, later_users=5000, items=3000, hidden=256, layers=4, heads=4, max_len=50, epochs=40, adapt_epochs=20),
}

# Real files: the dataset plugin, its default path and options, the model and the two periods as
# (validation, test) time quantiles of the temporal split; "model"/"train" override the defaults.
FILES = {
    "ml-latest-small": dict(plugin="movielens", path="../shared/data/ml-latest-small-ratings.csv", dataset={"k_core": 10},
                            hidden=64, layers=2, heads=2, max_len=100, epochs=60, adapt_epochs=40,
                            earlier=(0.5, 0.6), later=(0.8, 0.9), model={"dropout": 0.3, "attention_dropout": 0.3},
                            train={"eval_every_epochs": 2, "patience": 10}),
}

VARIANTS = {  # name -> (adapter section, learning rate)
    "full fine-tuning": ({"name": "none"}, 1e-3),
    "LoRA r8": ({"name": "lora", "rank": 8, "alpha": 16.0}, 5e-3),
    "iLoRA r8 (4x2)": ({"name": "ilora", "rank": 8, "experts": 4, "alpha": 16.0}, 5e-3),
}


def synthetic_periods(size: dict) -> dict[str, dict]:
    """The sections that differ between the periods: synthetic phase 0, then phase 1 (rewired, new users)."""
    dataset = {"name": "synthetic", "items": size["items"], "mean_length": 20, "popularity_exponent": 0.6,
               "follow_prob": 0.8, "rewire": 0.5}
    return {"earlier": {"dataset": {**dataset, "users": size["users"], "phase": 0}},
            "later": {"dataset": {**dataset, "users": size["later_users"], "phase": 1}}}


def file_periods(setting: dict, path: str) -> dict[str, dict]:
    """The sections that differ between the periods: one file, the temporal split at earlier/later quantiles."""
    dataset = {"name": setting["plugin"], "path": path, **setting["dataset"]}
    # A period has only ~20-30 evaluation users (few MovieLens users rate on both sides of a cut-off),
    # so NDCG@10 of the first held-out item is mostly 0 or one hit: select checkpoints on Recall@10 of
    # every held-out item instead, a smoother signal.
    evaluation = {"split": "temporal", "metric": "recall@10"}
    return {period: {"dataset": dataset, "eval": {**evaluation, "temporal_quantiles": list(setting[period])}}
            for period in ("earlier", "later")}


def recipe(size: dict, device: str, period: dict, name: str, **sections):
    """The recipe of one period (``period``: its own sections), with ``sections`` merged over it."""
    data = {
        "run": {"name": name, "device": device, "seed": 0},
        "model": {"name": "bert4rec", "hidden": size["hidden"], "layers": size["layers"], "heads": size["heads"],
                  "max_len": size["max_len"], "init_std": 0.1, **size.get("model", {})},
        "train": {"epochs": size["epochs"], "batch_size": 64, "lr": 3e-3, "warmup_steps": 50, "patience": 5,
                  **size.get("train", {})},
        "eval": {"ks": [10]},
    }
    for key, value in [*period.items(), *sections.items()]:
        data[key] = {**data.get(key, {}), **value}
    return resolve(data, load_registry())


def fresh_run(path: Path, r) -> RunDir:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    run = RunDir(path)
    run.recipe.write_text(r.to_toml())
    return run


def _bench_child(recipe_toml: str, queue) -> None:
    import tomllib

    torch.set_num_threads(1)
    r = resolve(tomllib.loads(recipe_toml), load_registry())
    result = bench_recipe(r, steps=10, warmup=3)
    if result["peak_memory_mb"] is None:  # CPU: peak RSS of this whole process (KiB on Linux)
        result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(result)


def bench_in_child(r) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_bench_child, args=(r.to_toml(), queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="small", help="Synthetic data of this size (without --data).")
    parser.add_argument("--data", choices=FILES, help="A real timestamped file instead of synthetic data.")
    parser.add_argument("--data-path", help="Where the --data file is (default: its place under ../shared/data).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/adaptation"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.data:
        size = FILES[args.data]
        periods = file_periods(size, args.data_path or size["path"])
        label = f"{args.data}, temporal quantiles {size['earlier']} then {size['later']}"
    else:
        size = SIZES[args.size]
        periods = synthetic_periods(size)
        label = f"synthetic size {args.size}"
    quiet = Console(file=io.StringIO())
    rows = []

    base_recipe = recipe(size, args.device, periods["earlier"], "earlier")
    base_run = fresh_run(args.out / "base", base_recipe)
    started = time.perf_counter()
    base_results = train(base_recipe, base_run, console=quiet)
    print(f"base (earlier period): {base_results['valid']['users']} valid / {base_results['test']['users']} test users, "
          f"test ndcg@10 {base_results['test']['model']['ndcg@10']:.4f}, best epoch {base_results['best_epoch']} "
          f"of {base_results['epochs_run']}, in {time.perf_counter() - started:.0f}s")

    later = dict(init={"from_run": str(base_run.path)}, train={"epochs": size["adapt_epochs"], "warmup_steps": 20})
    frozen = recipe(size, args.device, periods["later"], "later", **later)
    dataset, split = load_data(frozen)
    model, _ = build_model(frozen, dataset.num_items)
    device = resolve_device(args.device, option="--device")
    results = evaluate_splits(frozen, model.to(device).eval(), split, ["valid", "test"],
                              frozen.precision.build(device=device), device, quiet)
    print(f"later period: {split.train.num_users} training users ({len(split.train.items):,} interactions), "
          f"{len(split.valid)} valid users, {len(split.test)} test users")
    rows.append({"variant": "frozen base", **scores(results), "trainable": 0, "parameters": count_parameters(model),
                 "step_ms": None, "peak_mb": None, "seconds": 0.0, "epochs": "-"})

    for name, (adapter, lr) in VARIANTS.items():
        r = recipe(size, args.device, periods["later"], "later", **{**later, "train": {**later["train"], "lr": lr}}, adapter=adapter)
        run = fresh_run(args.out / name.split()[0].lower().replace("-", ""), r)
        release()  # each variant compiles afresh (see training.release)
        started = time.perf_counter()
        res = train(r, run, console=quiet)
        seconds = time.perf_counter() - started
        bench = bench_in_child(r)
        rows.append({"variant": name, **scores(res), "trainable": bench["trainable_parameters"],
                     "parameters": bench["parameters"], "step_ms": bench["step_ms"], "peak_mb": bench["peak_memory_mb"],
                     "seconds": seconds, "epochs": f"{res['best_epoch']}/{res['epochs_run']}", "device": bench["device"]})
        print(f"{name}: valid {rows[-1]['valid']:.4f} test {rows[-1]['test']:.4f} ({seconds:.0f}s)")

    print(f"\n{label}, device {args.device}, torch {torch.__version__}, "
          f"{len(split.valid)} valid / {len(split.test)} test users in the later period\n")
    print("| variant | valid NDCG@10 | test NDCG@10 | valid Recall@10 | test Recall@10 | trainable params | share | step (ms) "
          "| peak mem (MB) | train time (s) | best/run epochs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        share = row["trainable"] / row["parameters"]
        step = f"{row['step_ms']:.1f}" if row["step_ms"] else "-"
        peak = f"{row['peak_mb']:.0f}" if row["peak_mb"] else "-"
        print(f"| {row['variant']} | {row['valid']:.4f} | {row['test']:.4f} | {row['valid_recall']:.4f} | {row['recall']:.4f} "
              f"| {row['trainable']:,} | {share:.2%} "
              f"| {step} | {peak} | {row['seconds']:.0f} | {row['epochs']} |")
    popularity = rows[0]["popularity"]
    print(f"| popularity (later period) | {popularity['valid']:.4f} | {popularity['test']:.4f} | {popularity['valid_recall']:.4f} "
          f"| {popularity['recall']:.4f} | | | | | | |")
    (args.out / "adaptation.json").write_text(json.dumps(rows, indent=1))


def scores(results: dict) -> dict:
    """The table's metrics of the model, and of the popularity baseline beside it."""
    def of(who: str) -> dict:
        return {"valid": results["valid"][who]["ndcg@10"], "test": results["test"][who]["ndcg@10"],
                "valid_recall": results["valid"][who]["recall@10"], "recall": results["test"][who]["recall@10"]}
    return {**of("model"), "popularity": of("popularity")}


if __name__ == "__main__":
    main()
