"""Which GPU kernels an adapter adds to the training step (130M shape unless --shape): frozen base against LoRA or iLoRA.

Times the step with `recengine.bench.bench_recipe` (as `recengine bench --shape electronics-130m`
does: amp; eager or torch.compile), then profiles 10 more steps and writes the per-step GPU
time and launch count of every kernel name (top 80 by time) to OUT.json. Compare two files to
see what an adapter costs: `torch-compile` with mode `default` shows each kernel that CUDA
graphs (`reduce-overhead`, the mode the adapter benchmarks time) would replay.

    python benchmarks/adapter_kernels.py frozen.json frozen torch-compile
    python benchmarks/adapter_kernels.py lora.json lora torch-compile
"""

import argparse
import collections
import json

import torch
from torch.profiler import ProfilerActivity, profile

from recengine import bench
from recengine.plugins import load_registry
from recengine.recipe import load_recipe


class KernelTable:
    """A profiler for `bench_recipe`: GPU time and launches per step of each kernel name."""

    steps_needed = 10

    def __enter__(self):
        self.prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]).__enter__()
        return self

    def step(self) -> None:
        pass

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self.prof.__exit__(*exc)
        per_name = collections.defaultdict(lambda: [0.0, 0.0])
        for event in self.prof.events():
            if event.device_type == torch.autograd.DeviceType.CUDA:
                per_name[event.name][0] += event.device_time_total / 1000 / self.steps_needed
                per_name[event.name][1] += 1 / self.steps_needed
        rows = sorted(([name[:160], round(ms, 4), calls] for name, (ms, calls) in per_name.items()), key=lambda r: -r[1])
        self.summary = {"kernel_ms_per_step": sum(r[1] for r in rows), "kernels_per_step": sum(r[2] for r in rows), "top": rows[:80]}
        return False


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out")
parser.add_argument("adapter", choices=["frozen", "lora", "ilora"], help="frozen: LoRA rank 1 on `out` only (the adapter benchmarks' baseline)")
parser.add_argument("compiler", choices=["eager", "torch-compile"])
parser.add_argument("--mode", default="default", help="torch.compile mode")
parser.add_argument("--shape", default="electronics-130m", choices=sorted(bench.SHAPES), help="model and data shape")
args = parser.parse_args()

registry = load_registry()
shape = bench.SHAPES[args.shape]
base = bench.shape_recipe(load_recipe("recipes/quickstart.toml", registry), shape, registry)
overrides = ["run.device=cuda"] + (["compiler.dynamic=true", f"compiler.mode={args.mode}"] if args.compiler == "torch-compile" else [])
overrides += ["adapter.rank=1", 'adapter.targets=["out"]'] if args.adapter == "frozen" else []
setting = {"precision": "amp", "compiler": args.compiler, "adapter": "ilora" if args.adapter == "ilora" else "lora"}
recipe = bench.matrix_recipe(base, setting, registry, overrides)
result = bench.bench_recipe(recipe, steps=100, warmup=60, dataset=bench.shape_dataset(shape, 100_000), eval_users=0,
                            data_batches=0, profiler=KernelTable())
kernels = result["profile"]
record = {"adapter": args.adapter, "compiler": args.compiler, "mode": args.mode, "step_ms_median": result["step_ms"],
          "trainable": result["trainable_parameters"], **kernels}
with open(args.out, "w") as f:
    json.dump(record, f, indent=1)
print(f"{args.adapter} {args.compiler} {args.mode}: step {record['step_ms_median']:.2f} ms, "
      f"kernels {kernels['kernel_ms_per_step']:.2f} ms in {kernels['kernels_per_step']:.0f} launches per step")
