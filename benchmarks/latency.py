"""Serving latency: p50/p99 at batch 1 and throughput at batch 256, eager vs each exported artifact.

    python benchmarks/latency.py --device cpu                   # trains the quickstart shape for 1 epoch first
    python benchmarks/latency.py --device cuda --run runs/quickstart-demo

Without --run, the quickstart recipe is trained for one epoch into a temp directory: latency
depends on the model's shape, not on how well it is trained. Every path computes the same
thing: left-padded histories [B, max_len - 1] -> top-k ids and scores with history exclusion
(the eager path is the `TopK` module the artifacts are exported from, run under no_grad).
Inputs are random histories of random lengths, already on the device; for onnx on CUDA the
onnxruntime CUDA provider is needed (otherwise onnx is skipped there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from recengine.hardware import cpu_name
from recengine.export import FORMATS, TopK, export_run, for_export, load_artifact, missing_packages, random_windows
from recengine.inference import load_model

ROOT = Path(__file__).resolve().parents[1]


def train_quickstart(root: Path, epochs: int) -> Path:
    from rich.console import Console

    from recengine.plugins import load_registry
    from recengine.recipe import load_recipe
    from recengine.runs import RunDir
    from recengine.training import train

    recipe = load_recipe(ROOT / "recipes" / "quickstart.toml", load_registry(), [f"train.epochs={epochs}"])
    recipe.monitors = []
    run = RunDir(root / "quickstart")
    run.path.mkdir(parents=True)
    run.recipe.write_text(recipe.to_toml())
    train(recipe, run, console=Console(stderr=True, quiet=True))
    return run.path


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(fn, inputs: list[torch.Tensor], device: str) -> list[float]:
    """Seconds per call, one call per input."""
    times = []
    for tokens in inputs:
        sync(device)
        start = time.perf_counter()
        fn(tokens)
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def measure(fn, num_items: int, length: int, device: str, iters: int, warmup: int, batch: int) -> dict:
    g = torch.Generator().manual_seed(0)
    one = [random_windows(num_items, length, 1, g, device) for _ in range(iters + warmup)]
    big = [random_windows(num_items, length, batch, g, device) for _ in range(max(3, iters // 20) + 2)]
    with torch.no_grad():
        time_calls(fn, one[:warmup] + big[:2], device)
        single = sorted(time_calls(fn, one[warmup:], device))
        batched = time_calls(fn, big[2:], device)
    return {
        "p50_ms": 1e3 * statistics.median(single),
        "p99_ms": 1e3 * single[min(len(single) - 1, int(round(0.99 * (len(single) - 1))))],
        "users_per_s": batch / statistics.median(batched),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--run", type=Path, help="a trained run directory (default: quickstart trained for --epochs)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated export formats to time")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--iters", type=int, default=200, help="batch-1 calls timed (after warm-up)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or train_quickstart(Path(tmp), args.epochs)
        model, adapter, _ = load_model(run_dir)
        eager = TopK(for_export(model, adapter).to(device), args.k).eval()
        shape = dict(num_items=eager.num_items, length=eager.max_len - 1, device=device, iters=args.iters,
                     warmup=args.warmup, batch=args.batch)
        rows = {"eager": measure(eager, **shape)}
        for fmt in [f for f in args.formats.split(",") if f]:
            if missing_packages(fmt):
                print(f"skipping {fmt}: needs {', '.join(missing_packages(fmt))}", file=sys.stderr)
                continue
            if fmt == "onnx" and device.startswith("cuda"):
                import onnxruntime

                if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                    print("skipping onnx on cuda: onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)", file=sys.stderr)
                    continue
            out = export_run(run_dir, fmt, Path(tmp) / f"export-{fmt}", k=args.k, device=device)
            rows[fmt] = measure(load_artifact(out, device).top_k, **shape)

    info = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else f"{cpu_name()} ({os.cpu_count()} logical cores)",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
        "model": f"bert4rec, {eager.num_items} items, max_len {eager.max_len}, k {eager.k}",
        "command": "python " + " ".join(sys.argv),
    }
    print(json.dumps(info))
    print(f"| path | p50 batch 1 (ms) | p99 batch 1 (ms) | users/s at batch {args.batch} |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in rows.items():
        print(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['users_per_s']:,.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
