"""Data-parallel training throughput of one recipe shape on this many GPUs (run it under torchrun).

Builds the model, data and step exactly as `recengine train` does under torchrun (the
`Objective` wrapped by DDP or FSDP2, rank-sliced global batches), runs ``--warmup`` untimed
steps, times ``--steps`` steps, and has rank 0 append one JSON line to ``--out``:
median step time, global samples/s, and the largest peak memory over the ranks.

    torchrun --standalone --nproc_per_node=2 benchmarks/scaling_gpus.py --shape 130m --batch 256 --out scaling.jsonl

``--trace FILE.json.gz`` then profiles 3 more steps and has rank 0 write their Chrome trace
(open it in Perfetto: the NCCL kernels after the backward's last kernel are DDP's exposed
cost) and add the per-step GPU time of NCCL and of all other kernels to its JSON line.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as tdist

from recengine import distributed
from recengine.hardware import hardware_info
from recengine.losses import Objective, build_loss
from recengine.model import count_parameters
from recengine.plugins import load_registry
from recengine.recipe import resolve
from recengine.tasks import training_batches
from recengine.training import TrainStep, adamw, build_model, exchanged_table, load_data, resolve_device
from recengine_plugins.profilers import kernel_time_ms

SHAPES = {  # plugins/bert4rec.py's named sizes, over the ML-20M-sized synthetic catalog
    "130m": {"hidden": 384, "layers": 4, "heads": 6, "ffn": 1536},
    "430m": {"hidden": 1024, "layers": 8, "heads": 16, "ffn": 4096},
}


def recipe_data(shape: str, batch: int, strategy: str, precision: str, items: int = 160_054, compiler: str = "eager") -> dict:
    return {
        "run": {"name": f"scaling-{shape}", "seed": 0, "device": "cuda"},
        "dataset": {"name": "synthetic", "users": 50_000, "items": items, "mean_length": 60, "seed": 0},
        "model": {"name": "bert4rec", "max_len": 50, **SHAPES[shape]},
        "train": {"batch_size": batch, "batch_size_is": "per_gpu"},
        "precision": {"name": precision},
        "compiler": {"name": compiler},
        "distributed": {"strategy": strategy},
    }


def traced_kernel_ms(run_step, trace: Path, write: bool, steps: int = 3) -> dict[str, float]:
    """Profile ``steps`` calls of ``run_step``; the GPU time per step of NCCL kernels and of all
    others (they overlap, so the two do not add up to the step). ``write``: export the trace."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            run_step()[0].item()
    events = prof.key_averages()
    nccl = kernel_time_ms([e for e in events if "nccl" in e.key.lower()]) / steps
    if write:
        prof.export_chrome_trace(str(trace))
    return {"nccl_kernel_ms": nccl, "other_kernel_ms": kernel_time_ms(events) / steps - nccl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, required=True)
    parser.add_argument("--batch", type=int, default=256, help="sequences per GPU per step")
    parser.add_argument("--strategy", choices=["ddp", "fsdp2"], default="ddp")
    parser.add_argument("--precision", default="fp32", help="a precision plugin name, e.g. bf16 when installed")
    parser.add_argument("--items", type=int, default=160_054, help="catalog size (the tables grow with it, the encoder does not)")
    parser.add_argument("--compiler", default="eager", help="a compiler plugin name: eager or torch-compile (its default options)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--grad-compression", choices=["none", "bf16", "fp16"], default="none", help="DDP comm hook")
    parser.add_argument("--input-grads", choices=["all-reduce", "touched-rows"], default="all-reduce",
                        help="distributed.input_embedding_grads: how the input item table's gradient is averaged")
    parser.add_argument("--bucket-cap-mb", type=float, default=25)
    parser.add_argument("--no-bucket-view", action="store_true", help="DDP gradient_as_bucket_view=False (torch's default)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trace", type=Path, help="also profile 3 steps; rank 0 writes their Chrome trace here (.json.gz)")
    args = parser.parse_args()

    recipe = resolve(recipe_data(args.shape, args.batch, args.strategy, args.precision, args.items, args.compiler), load_registry(), "scaling_gpus")
    device = resolve_device(recipe.run.device)
    dist = distributed.setup(args.strategy, device)
    device = dist.device(device)
    torch.manual_seed(0)
    _, split = load_data(recipe)
    model, _ = build_model(recipe, split.train.num_items)
    model.to(device).train()
    parameters = count_parameters(model)
    cfg = recipe.train
    objective = dist.wrap(Objective(model, build_loss(model, cfg, split.train.item_counts())),
                          bucket_cap_mb=args.bucket_cap_mb, gradient_as_bucket_view=not args.no_bucket_view,
                          grad_compression=args.grad_compression,
                          **exchanged_table(model, args.input_grads, cfg.batch_size, cfg.batch_size_is, dist.world_size))
    step = TrainStep(model, adamw(model, cfg.lr, cfg.weight_decay, cfg.betas, device), recipe.precision.build(device=device),
                     recipe.compiler.build(), cfg, dist=dist, objective=objective)
    global_batch = distributed.global_batch_size(cfg.batch_size, cfg.batch_size_is, dist.world_size)
    batches = training_batches(model, split.train, cfg, 0, device, dist.rank, dist.world_size)
    stream = (b for epoch in range(10**6) for b in batches.epoch(epoch) if len(b) == args.batch)  # full batches only
    torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.warmup + args.steps):
        batch = next(stream)
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        loss, _ = step(batch, cfg.lr)
        loss.item()  # the all-reduced loss: every rank has finished the step
        if i >= args.warmup:
            times.append(time.perf_counter() - started)
    peak = torch.tensor(torch.cuda.max_memory_allocated(device) / 2**20, device=device)
    if dist.world_size > 1:
        tdist.all_reduce(peak, op=tdist.ReduceOp.MAX)
    kernels = traced_kernel_ms(lambda: step(next(stream), cfg.lr), args.trace, dist.is_main) if args.trace else {}
    step_s = statistics.median(times)
    mean_s = statistics.fmean(times)
    if dist.is_main:
        record = {"shape": args.shape, "strategy": args.strategy, "gpus": dist.world_size, "precision": args.precision, "compiler": args.compiler,
                  "batch_per_gpu": args.batch,
                  "grad_compression": args.grad_compression, "input_grads": args.input_grads, "items": args.items, "bucket_cap_mb": args.bucket_cap_mb,
                  "gradient_as_bucket_view": not args.no_bucket_view,
                  "global_batch": global_batch, "parameters": parameters,
                  "step_ms": step_s * 1000, "step_ms_mean": mean_s * 1000, "samples_per_s": global_batch / step_s, "peak_memory_mb_per_gpu": peak.item(),
                  # Whether torchrun's --numa-binding (NUMA= in scaling_gpus.sh) had anything to bind, and what rank 0 got.
                  "numa_nodes": len(glob.glob("/sys/devices/system/node/node[0-9]*")), "rank0_cpus": len(os.sched_getaffinity(0)),
                  **kernels, **hardware_info(device)}
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record))
    dist.close()


if __name__ == "__main__":
    main()
