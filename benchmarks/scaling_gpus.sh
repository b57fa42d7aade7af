#!/usr/bin/env bash
# Data-parallel scaling on one host: the 130M and 430M shapes on 1, 2 and 4 GPUs at the same
# per-GPU batch (DDP), in ROUNDS interleaved rounds (1, 2, 4 GPUs, then again), because the
# 1-GPU baseline moves between runs as much as the gap to the targets (>= 1.8x on 2 GPUs,
# >= 3.4x on 4; docs/benchmarks.md). Each round's speed-up is over that round's own 1-GPU run;
# the summary gives the median speed-up and its range over rounds. 200 timed steps per run.
# EXTRAS=1 adds, once each, gradients all-reduced in bf16 (distributed.grad_compression) and
# FSDP2 against DDP at 430M. About 30 s per run: ROUNDS=3 with both shapes is about 9 minutes.
#
#   benchmarks/scaling_gpus.sh [OUT_DIR] [PRECISION]                 # e.g. benchmarks/scaling_gpus.sh scaling amp
#   ROUNDS=2 SHAPES=430m EXTRAS=1 benchmarks/scaling_gpus.sh scaling amp
set -uo pipefail
OUT=${1:-scaling-$(date +%Y%m%d-%H%M%S)}
PRECISION=${2:-fp32}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
# No NVLink multicast / symmetric-memory multicast on the lent machines.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 OMP_NUM_THREADS=4
GPUS=$(nvidia-smi -L | wc -l)
declare -A BATCH=([130m]=256 [430m]=128)  # the recipes' per-GPU batches
run() {  # nproc shape strategy [more scaling_gpus.py options]
  [ "$1" -le "$GPUS" ] || { echo "skip: $1 GPUs asked, $GPUS present"; return; }
  local n=$1 shape=$2 strategy=$3; shift 3
  timeout --kill-after=10 "${RUN_LIMIT_S:-150}" "$PY" -m torch.distributed.run --standalone --nproc_per_node="$n" benchmarks/scaling_gpus.py \
    --shape "$shape" --batch "${BATCH[$shape]}" --strategy "$strategy" --precision "$PRECISION" --out "$OUT/runs.jsonl" "$@" \
    || echo "failed or timed out: $n $shape $strategy $* (exit $?)"
}
for round in $(seq 1 "${ROUNDS:-3}"); do
  for shape in ${SHAPES:-130m 430m}; do
    for n in 1 2 4; do run "$n" "$shape" ddp; done
  done
done
if [ -n "${EXTRAS:-}" ]; then
  for shape in ${SHAPES:-130m 430m}; do for n in 2 4; do run "$n" "$shape" ddp --grad-compression bf16; done; done
  for n in 1 2 4; do run "$n" 430m fsdp2; done
fi
"$PY" - "$OUT" <<'PY'
import collections, json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1]); rows = [json.loads(l) for l in (out / "runs.jsonl").read_text().splitlines()]
# Rows are in run order: the k-th 1-GPU DDP run of a shape is round k's baseline.
seen, base = collections.Counter(), {}
for r in rows:
    key = (r["shape"], r["strategy"], r.get("grad_compression", "none"), r["gpus"])
    seen[key] += 1
    r["round"] = seen[key]
    if key[1:] == ("ddp", "none", 1):
        base[(r["shape"], r["round"])] = r["samples_per_s"]
for r in rows:  # extras (one run each) are compared with the first round's baseline
    r["speedup_vs_1gpu_ddp"] = r["samples_per_s"] / base.get((r["shape"], r["round"]), base.get((r["shape"], 1), float("nan")))
(out / "summary.json").write_text(json.dumps(rows, indent=1))
groups = collections.defaultdict(list)
for r in rows:
    groups[(r["shape"], r["strategy"], r.get("grad_compression", "none"), r["gpus"])].append(r)
for (shape, strategy, exchange, gpus), rs in groups.items():
    s = [r["speedup_vs_1gpu_ddp"] for r in rs]
    print(f'{shape:>5} {strategy:>5} {exchange:>4} x{gpus}: step {statistics.median(r["step_ms"] for r in rs):6.2f} ms, '
          f'{statistics.median(r["samples_per_s"] for r in rs):8.0f} samples/s, speed-up {statistics.median(s):.2f}x '
          f'(range {min(s):.2f}-{max(s):.2f} over {len(s)} runs), peak {max(r["peak_memory_mb_per_gpu"] for r in rs):.0f} MiB/GPU')
PY
