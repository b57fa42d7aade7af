"""Where the training step's time goes, on a named bench shape: torch.profiler over a few
steps, top operators by self device time and by CPU time, plus a compile attempt with its
full error. Usage: python benchmarks/profile_step.py --shape electronics-130m [overrides...]"""

import argparse
import itertools
import traceback

import torch

from recengine.bench import SHAPES, shape_dataset, shape_recipe
from recengine.data.split import leave_one_out
from recengine.plugins import load_registry
from recengine.recipe import load_recipe
from recengine.tasks import training_batches
from recengine.training import TrainStep, adamw, resolve_device

parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="electronics-130m")
parser.add_argument("--users", type=int, default=100_000)
parser.add_argument("--steps", type=int, default=6)
parser.add_argument("--compile-check", action="store_true")
parser.add_argument("overrides", nargs="*")
args = parser.parse_args()

registry = load_registry()
shape = SHAPES[args.shape]
recipe = shape_recipe(load_recipe("recipes/quickstart.toml", registry, ["run.device=cuda", *args.overrides]), shape, registry)
device = resolve_device(recipe.run.device)
split = leave_one_out(shape_dataset(shape, args.users).sequences)
with device:
    model = recipe.model.build(num_items=shape.items)
cfg = recipe.train
step = TrainStep(model, adamw(model, cfg.lr, cfg.weight_decay, cfg.betas, device), recipe.precision.build(device=device),
                 recipe.compiler.build(), cfg, item_counts=split.train.item_counts())
batches = training_batches(model, split.train, cfg, 0, device)
stream = (b for e in itertools.count() for b in batches.epoch(e))
if args.compile_check:
    fn = torch.compile(step.loss_fn, dynamic=True)
    b = next(stream)
    try:
        with recipe.precision.build(device=device).autocast():
            fn(b.inputs, b.positions, b.targets).backward()
        print("compile ok")
    except Exception:
        traceback.print_exc(limit=30)
for _ in range(5):
    step(next(stream), cfg.lr)
torch.cuda.synchronize()
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
    for _ in range(args.steps):
        step(next(stream), cfg.lr)
    torch.cuda.synchronize()
table = prof.key_averages()
print(table.table(sort_by="self_cuda_time_total", row_limit=22, max_name_column_width=60))
print(table.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
