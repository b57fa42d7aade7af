"""Which GPU kernels an adapter adds to the 130M training step: frozen base against LoRA or iLoRA.

Builds the step as `recengine bench --shape electronics-130m` does (amp; eager or torch.compile),
runs 60 steps to warm up (compiling), times 100, then profiles 10 and writes per-step GPU
time and launch count of every kernel name (top 80 by time) to OUT.json. Compare two files
to see what an adapter costs: `torch-compile` with mode `default` shows each kernel that
CUDA graphs (`reduce-overhead`, the mode the adapter benchmarks time) would replay.

    python benchmarks/adapter_kernels.py frozen.json frozen torch-compile
    python benchmarks/adapter_kernels.py lora.json lora torch-compile
"""

import argparse
import collections
import itertools
import json
import time

import torch
from torch.profiler import ProfilerActivity, profile

from recengine import bench
from recengine.data.split import leave_one_out
from recengine.plugins import load_registry
from recengine.recipe import load_recipe
from recengine.tasks import training_batches
from recengine.training import TrainStep, adamw

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out")
parser.add_argument("adapter", choices=["frozen", "lora", "ilora"], help="frozen: LoRA rank 1 on `out` only (the adapter benchmarks' baseline)")
parser.add_argument("compiler", choices=["eager", "torch-compile"])
parser.add_argument("--mode", default="default", help="torch.compile mode")
args = parser.parse_args()

registry = load_registry()
shape = bench.SHAPES["electronics-130m"]
base = bench.shape_recipe(load_recipe("recipes/quickstart.toml", registry), shape, registry)
overrides = ["run.device=cuda"] + (["compiler.dynamic=true", f"compiler.mode={args.mode}"] if args.compiler == "torch-compile" else [])
overrides += ["adapter.rank=1", 'adapter.targets=["out"]'] if args.adapter == "frozen" else []
setting = {"precision": "amp", "compiler": args.compiler, "adapter": "ilora" if args.adapter == "ilora" else "lora"}
recipe = bench.matrix_recipe(base, setting, registry, overrides)
split = leave_one_out(bench.shape_dataset(shape, 100_000).sequences)
torch.manual_seed(0)
device = torch.device("cuda")
with device:
    model = recipe.adapter.build().adapt(recipe.model.build(num_items=shape.items))
model.train()
cfg = recipe.train
step = TrainStep(model, adamw(model, cfg.lr, cfg.weight_decay, cfg.betas, device), recipe.precision.build(device=device),
                 recipe.compiler.build(), cfg, item_counts=split.train.item_counts())
stream = (b for epoch in itertools.count() for b in training_batches(model, split.train, cfg, 0, device).epoch(epoch))
for batch in itertools.islice(stream, 60):
    step(batch, cfg.lr)
times = []
for batch in itertools.islice(stream, 100):
    torch.cuda.synchronize()
    started = time.perf_counter()
    step(batch, cfg.lr)
    torch.cuda.synchronize()
    times.append(time.perf_counter() - started)
profiled = list(itertools.islice(stream, 10))
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for batch in profiled:
        step(batch, cfg.lr)
    torch.cuda.synchronize()
per_name = collections.defaultdict(lambda: [0.0, 0])
for event in prof.events():
    if event.device_type == torch.autograd.DeviceType.CUDA:
        per_name[event.name][0] += event.device_time_total / 1000 / len(profiled)
        per_name[event.name][1] += 1 / len(profiled)
rows = sorted(([name[:160], round(ms, 4), calls] for name, (ms, calls) in per_name.items()), key=lambda r: -r[1])
result = {"adapter": args.adapter, "compiler": args.compiler, "mode": args.mode,
          "step_ms_median": sorted(times)[len(times) // 2] * 1000,  # profiled separately: no CUDA graphs in `default`
          "kernel_ms_per_step": sum(r[1] for r in rows), "kernels_per_step": sum(r[2] for r in rows), "top": rows[:80],
          "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
print(f"{args.adapter} {args.compiler} {args.mode}: step {result['step_ms_median']:.2f} ms, "
      f"kernels {result['kernel_ms_per_step']:.2f} ms in {result['kernels_per_step']:.0f} launches per step")
