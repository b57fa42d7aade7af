"""Learning-rate schedule: linear warm-up, then cosine decay. A pure function of the step,
so resuming needs no scheduler state."""

import math


def warmup_cosine(step: int, peak_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
