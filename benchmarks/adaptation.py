"""Does adaptation work? Base on an earlier period, adapted to a later one.

A base BERT4Rec is trained on the synthetic dataset's phase 0; the later period is phase 1
of the same catalog (half the items' successors rewired, new users). On phase 1's
validation/test split (leave-one-out, full ranking) we compare:

  frozen base | full fine-tuning | LoRA | iLoRA

with trainable parameters, median step time and peak memory of one training step.
Step time and memory come from `recengine.bench.bench_recipe` in a fresh process per
variant (on CPU, memory is the process's peak RSS; on CUDA, torch's peak allocation).

    .venv/bin/python benchmarks/adaptation.py --size small --device cpu
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
from recengine.training import build_model, evaluate_splits, load_data, resolve_device, train

SIZES = {
    "small": dict(users=1500, later_users=600, items=300, hidden=64, layers=2, heads=2, max_len=30, epochs=25, adapt_epochs=15),
    "medium": dict(users=20000, later_users=5000, items=3000, hidden=256, layers=4, heads=4, max_len=50, epochs=40, adapt_epochs=20),
}

VARIANTS = {  # name -> (adapter section, learning rate)
    "full fine-tuning": ({"name": "none"}, 1e-3),
    "LoRA r8": ({"name": "lora", "rank": 8, "alpha": 16.0}, 5e-3),
    "iLoRA r8 (4x2)": ({"name": "ilora", "rank": 8, "experts": 4, "alpha": 16.0}, 5e-3),
}


def recipe(size: dict, device: str, phase: int, **sections):
    data = {
        "run": {"name": f"phase{phase}", "device": device, "seed": 0},
        "dataset": {"name": "synthetic", "users": size["users"] if phase == 0 else size["later_users"], "items": size["items"],
                    "mean_length": 20, "popularity_exponent": 0.6, "follow_prob": 0.8, "phase": phase, "rewire": 0.5},
        "model": {"name": "bert4rec", "hidden": size["hidden"], "layers": size["layers"], "heads": size["heads"],
                  "max_len": size["max_len"], "init_std": 0.1},
        "train": {"epochs": size["epochs"], "batch_size": 64, "lr": 3e-3, "warmup_steps": 50, "patience": 5},
        "eval": {"ks": [10]},
    }
    for key, value in sections.items():
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
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/adaptation"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    size = SIZES[args.size]
    quiet = Console(file=io.StringIO())
    rows = []

    base_recipe = recipe(size, args.device, 0)
    base_run = fresh_run(args.out / "base", base_recipe)
    started = time.perf_counter()
    base_results = train(base_recipe, base_run, console=quiet)
    print(f"base (phase 0): test ndcg@10 {base_results['test']['model']['ndcg@10']:.4f} in {time.perf_counter() - started:.0f}s")

    later = dict(init={"from_run": str(base_run.path)}, train={"epochs": size["adapt_epochs"], "warmup_steps": 20})
    frozen = recipe(size, args.device, 1, **later)
    dataset, split = load_data(frozen)
    model, _ = build_model(frozen, dataset.num_items)
    device = resolve_device(args.device)
    results = evaluate_splits(frozen, model.to(device).eval(), split, ["valid", "test"],
                              frozen.precision.build(device=device), device, quiet)
    rows.append({"variant": "frozen base", "valid": results["valid"]["model"]["ndcg@10"], "test": results["test"]["model"]["ndcg@10"],
                 "popularity": results["test"]["popularity"]["ndcg@10"], "trainable": 0, "parameters": count_parameters(model),
                 "step_ms": None, "peak_mb": None, "seconds": 0.0})

    for name, (adapter, lr) in VARIANTS.items():
        r = recipe(size, args.device, 1, **{**later, "train": {**later["train"], "lr": lr}}, adapter=adapter)
        run = fresh_run(args.out / name.split()[0].lower().replace("-", ""), r)
        started = time.perf_counter()
        res = train(r, run, console=quiet)
        seconds = time.perf_counter() - started
        bench = bench_in_child(r)
        rows.append({"variant": name, "valid": res["valid"]["model"]["ndcg@10"], "test": res["test"]["model"]["ndcg@10"],
                     "popularity": res["test"]["popularity"]["ndcg@10"], "trainable": bench["trainable_parameters"],
                     "parameters": bench["parameters"], "step_ms": bench["step_ms"], "peak_mb": bench["peak_memory_mb"],
                     "seconds": seconds, "device": bench["device"]})
        print(f"{name}: valid {rows[-1]['valid']:.4f} test {rows[-1]['test']:.4f} ({seconds:.0f}s)")

    print(f"\nsize {args.size}, device {args.device}, torch {torch.__version__}\n")
    print("| variant | valid NDCG@10 | test NDCG@10 | trainable params | share | step (ms) | peak mem (MB) | train time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        share = row["trainable"] / row["parameters"]
        step = f"{row['step_ms']:.1f}" if row["step_ms"] else "-"
        peak = f"{row['peak_mb']:.0f}" if row["peak_mb"] else "-"
        print(f"| {row['variant']} | {row['valid']:.4f} | {row['test']:.4f} | {row['trainable']:,} | {share:.2%} | {step} | {peak} | {row['seconds']:.0f} |")
    print(f"| popularity (phase 1) | | {rows[0]['popularity']:.4f} | | | | | |")
    (args.out / "adaptation.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
