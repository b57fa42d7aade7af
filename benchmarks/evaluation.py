"""Full-ranking evaluation speed: 100,000 users over a 50,000-item catalog on CPU.

The scorer is a fixed user-embedding x item-embedding product (hidden 64), so the figure
is the cost of the evaluation itself: scoring the whole catalog, excluding each user's
history, pessimistic ranks, top-K thresholds, Recall@K and coverage@K. A transformer's
encoder cost comes on top and is measured by `recengine bench`.

    .venv/bin/python benchmarks/evaluation.py [--users 100000] [--items 50000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from recengine.data.sequences import Sequences
from recengine.data.split import EvalSet
from recengine.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--history", type=int, default=20, help="Mean history length.")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="1 makes cpu_seconds a contention-free single-core figure.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    lengths = 1 + rng.poisson(args.history - 1, size=args.users)
    seqs = Sequences.from_lengths(rng.integers(1, args.items + 1, size=lengths.sum()), lengths, args.items)
    targets = rng.integers(1, args.items + 1, size=args.users).astype(np.int64)
    eval_set = EvalSet(seqs, targets, np.arange(args.users))
    user_vectors = torch.randn(args.items + 2, args.hidden)  # the user vector: a function of the last item
    item_vectors = torch.randn(args.items + 1, args.hidden)

    def scorer(tokens: torch.Tensor) -> torch.Tensor:
        return user_vectors[tokens[:, -2]] @ item_vectors.t()

    started, cpu_started = time.perf_counter(), time.process_time()
    metrics = evaluate(scorer, eval_set, max_len=50, mask_token=args.items + 1, ks=(1, 5, 10, 20), batch_size=args.batch_size)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({"users": args.users, "items": args.items, "threads": args.threads, "batch_size": args.batch_size,
                      "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2), "users_per_s": round(args.users / seconds), "torch": torch.__version__,
                      "hr@10": metrics["hr@10"], "coverage@10": metrics["coverage@10"]}))


if __name__ == "__main__":
    main()
