"""DDP gradient exchange of a large embedding table: whole-table all-reduce against
`distributed.embedding_grad_rows` (all-gather of the rows a batch touched). Run under torchrun,
on GPUs (NCCL) or CPU (gloo); rank 0 prints one JSON line per setting.

    torchrun --standalone --nproc_per_node=2 benchmarks/embedding_grad_rows.py --rows 160056 --dim 1024
    torchrun --standalone --nproc_per_node=2 benchmarks/embedding_grad_rows.py --device cpu --dim 256 --steps 10

The model is the table alone plus a small head, so the step time is mostly the exchange.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from recengine import distributed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=160_056, help="table rows (the catalog)")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=128 * 50, help="ids looked up per rank per step")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    dist = distributed.setup("ddp", device)
    device = dist.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for rows_only in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Embedding(args.rows, args.dim), nn.Linear(args.dim, 1)).to(device)
        ddp = dist.wrap(model, embedding_grad_rows=rows_only)
        ids = torch.randint(0, args.rows, (args.steps + args.warmup, args.tokens), generator=torch.Generator().manual_seed(dist.rank))
        times = []
        for i, batch in enumerate(ids.to(device)):
            sync()
            started = time.perf_counter()
            ddp(batch).sum().backward()
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - started)
            model.zero_grad(set_to_none=False)
        if dist.is_main:
            print(json.dumps({"embedding_grad_rows": rows_only, "ranks": dist.world_size, "rows": args.rows, "dim": args.dim,
                              "tokens_per_rank": args.tokens, "step_ms": statistics.median(times) * 1000,
                              "table_mb": args.rows * args.dim * 4 / 2**20, "device": str(device), "torch": torch.__version__}))
    dist.close()


if __name__ == "__main__":
    main()
