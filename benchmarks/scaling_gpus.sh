#!/usr/bin/env bash
# Data-parallel scaling on one host: the 130M and 430M shapes on 1, 2 and 4 GPUs at the same
# per-GPU batch (DDP), the same with gradients all-reduced in bf16 (distributed.grad_compression),
# then FSDP2 against DDP at 430M. Writes JSON lines, then a summary JSON with the speed-up over
# 1 GPU (targets: >= 1.8x on 2 GPUs, >= 3.4x on 4). 200 timed steps per run (median and mean).
#
#   benchmarks/scaling_gpus.sh [OUT_DIR] [PRECISION]     # e.g. benchmarks/scaling_gpus.sh scaling amp
#   SKIP_FSDP2=1 benchmarks/scaling_gpus.sh scaling amp  # DDP only
set -uo pipefail
OUT=${1:-scaling-$(date +%Y%m%d-%H%M%S)}
PRECISION=${2:-fp32}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
# No NVLink multicast / symmetric-memory multicast on the lent machines.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 OMP_NUM_THREADS=4
GPUS=$(nvidia-smi -L | wc -l)
run() {  # nproc shape batch strategy [more scaling_gpus.py options]
  [ "$1" -le "$GPUS" ] || { echo "skip: $1 GPUs asked, $GPUS present"; return; }
  local n=$1 shape=$2 batch=$3 strategy=$4; shift 4
  timeout --kill-after=10 "${RUN_LIMIT_S:-150}" "$PY" -m torch.distributed.run --standalone --nproc_per_node="$n" benchmarks/scaling_gpus.py \
    --shape "$shape" --batch "$batch" --strategy "$strategy" --precision "$PRECISION" --out "$OUT/runs.jsonl" "$@" \
    || echo "failed or timed out: $n $shape $strategy $* (exit $?)"
}
for n in 1 2 4; do run "$n" 130m 256 ddp; done
for n in 2 4; do run "$n" 130m 256 ddp --grad-compression bf16; done
for n in 1 2 4; do run "$n" 430m 128 ddp; done   # the 430M recipe's batch
for n in 2 4; do run "$n" 430m 128 ddp --grad-compression bf16; done
[ -n "${SKIP_FSDP2:-}" ] || for n in 1 2 4; do run "$n" 430m 128 fsdp2; done
"$PY" - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1]); rows = [json.loads(l) for l in (out / "runs.jsonl").read_text().splitlines()]
base = {(r["shape"], r["strategy"]): r["samples_per_s"] for r in rows
        if r["gpus"] == 1 and r.get("grad_compression", "none") == "none"}
for r in rows:
    r["speedup_vs_1gpu_ddp"] = r["samples_per_s"] / base.get((r["shape"], "ddp"), float("nan"))
(out / "summary.json").write_text(json.dumps(rows, indent=1))
for r in rows:
    exchange = r.get("grad_compression", "none")
    print(f'{r["shape"]:>5} {r["strategy"]:>5} {exchange:>4} x{r["gpus"]}: {r["samples_per_s"]:10.0f} samples/s '
          f'{r["speedup_vs_1gpu_ddp"]:.2f}x  peak {r["peak_memory_mb_per_gpu"]:.0f} MiB/GPU')
PY
