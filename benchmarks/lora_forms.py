"""Does LoRA through its effective weight learn what the textbook form learns?

A LoRA layer without adapter dropout computes x (W + s B A)^T; the textbook form computes
x W^T + s (x A^T) B^T. They are the same function, but under bf16 autocast the effective
weight is rounded to bf16 as a whole, where the textbook form never rounds W + s B A. This
trains the quickstart base (recipes/quickstart.toml), then LoRA on its later period
(recipes/adapt-lora.toml) once per form, same seed and precision, and prints validation
NDCG@10 after every epoch and the test NDCG@10 of each best checkpoint.

    .venv/bin/python benchmarks/lora_forms.py                     # bf16 autocast on CPU
    .venv/bin/python benchmarks/lora_forms.py --precision fp32    # the forms agree to rounding here
    .venv/bin/python benchmarks/lora_forms.py train.patience=15   # KEY=VALUE overrides for the LoRA recipe
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console

from recengine.plugins import load_registry
from recengine.recipe import load_recipe
from recengine.training import train
from recengine_plugins.lora import LoRALinear, add_low_rank

from adaptation import fresh_run  # a sibling script: benchmarks/ is on sys.path when run as a script


def textbook_forward(self: LoRALinear, x: torch.Tensor) -> torch.Tensor:
    return add_low_rank(F.linear(x, self.weight, self.bias), F.linear(x, self.lora_a), self.lora_b, self.scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=["amp", "fp32"], default="amp", help="amp is bf16 autocast.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/lora-forms"))
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides for recipes/adapt-lora.toml.")
    args = parser.parse_args()
    registry, quiet = load_registry(), Console(file=io.StringIO())
    common = [f"run.device={args.device}", f"precision.name={args.precision}"]

    adapted = load_recipe("recipes/adapt-lora.toml", registry, [*common, f"init.from_run={args.out / 'base'}", *args.overrides])
    if adapted.adapter.name != "lora" or adapted.adapter.options.dropout:
        parser.error("compares the two forms of LoRA without adapter dropout: keep adapter.name=lora, adapter.dropout=0")
    base = load_recipe("recipes/quickstart.toml", registry, common)
    base_run = fresh_run(args.out / "base", base)
    print(f"base: test NDCG@10 {train(base, base_run, console=quiet)['test']['model']['ndcg@10']:.4f}")
    curves, tests = {}, {}
    effective_forward = LoRALinear.forward
    for form, forward in (("effective weight", effective_forward), ("textbook", textbook_forward)):
        LoRALinear.forward = forward
        curve = curves[form] = []
        try:
            result = train(adapted, fresh_run(args.out / form.split()[0], adapted), console=quiet,
                           on_validation=lambda epoch, metrics: curve.append(metrics["ndcg@10"]))
        finally:
            LoRALinear.forward = effective_forward
        tests[form] = (result["test"]["model"]["ndcg@10"], result["best_epoch"])

    print(f"\nLoRA on the later period, precision {args.precision}, device {args.device}, torch {torch.__version__}\n")
    print("| epoch | " + " | ".join(f"valid NDCG@10, {form}" for form in curves) + " |")
    print("|---:|" + "---:|" * len(curves))
    for epoch in range(max(map(len, curves.values()))):
        cells = [f"{c[epoch]:.4f}" if epoch < len(c) else "" for c in curves.values()]
        print(f"| {epoch + 1} | " + " | ".join(cells) + " |")
    for form, (test, best) in tests.items():
        print(f"{form}: test NDCG@10 {test:.4f} (best epoch {best})")


if __name__ == "__main__":
    main()
