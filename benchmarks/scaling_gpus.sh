#!/usr/bin/env bash
# Data-parallel scaling on one host: the 130M and 430M shapes on 1, 2 and 4 GPUs at the same
# per-GPU batch (DDP), in ROUNDS interleaved rounds (1, 2, 4 GPUs, then again), because the
# 1-GPU baseline moves between runs as much as the gap to the targets (>= 1.8x on 2 GPUs,
# >= 3.4x on 4; docs/benchmarks.md). Each round's speed-up is over that round's own 1-GPU run;
# the summary gives the median speed-up and its range over rounds. 200 timed steps per run.
# ROWS=1 adds, in every round, 2 and 4 GPUs with the input item table's gradient exchanged as
# touched rows (distributed.input_embedding_grads = "touched-rows") beside plain DDP.
# EXTRAS=1 adds, once each, gradients all-reduced in bf16 (distributed.grad_compression) and
# FSDP2 against DDP at 430M. TRACE=1 adds one profiled run per shape and GPU count (traces.jsonl
# with the per-step NCCL and other kernel time, and trace-SHAPE-xN.json.gz to open in Perfetto).
# COMPILER=torch-compile times compiled steps under DDP (give RUN_LIMIT_S room for compiling).
# NUMA=node (or socket, exclusive, core-complex) has torchrun bind each rank to the CPUs near its
# GPU (torchrun --numa-binding), against ranks drifting apart on a host-bound eager step.
# About 30 s per run: ROUNDS=3 with both shapes is about 9 minutes.
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
SHAPES=${SHAPES:-130m 430m}
for shape in $SHAPES; do [ -n "${BATCH[$shape]:-}" ] || { echo "SHAPES: unknown shape $shape (choose among ${!BATCH[*]})"; exit 2; }; done
run() {  # out nproc shape strategy [more scaling_gpus.py options]
  local out=$1 n=$2 shape=$3 strategy=$4; shift 4
  [ "$n" -le "$GPUS" ] || { echo "skip: $n GPUs asked, $GPUS present"; return; }
  timeout --kill-after=10 "${RUN_LIMIT_S:-150}" "$PY" -m torch.distributed.run --standalone --nproc_per_node="$n" ${NUMA:+--numa-binding="$NUMA"} benchmarks/scaling_gpus.py \
    --shape "$shape" --batch "${BATCH[$shape]}" --strategy "$strategy" --precision "$PRECISION" --compiler "${COMPILER:-eager}" --out "$out" "$@" \
    || echo "failed or timed out: $n $shape $strategy $* (exit $?)"
}
# One file per round, so a failed run cannot shift later runs onto another round's baseline.
if compgen -G "$OUT/round-*.jsonl" > /dev/null; then echo "$OUT already holds a scaling run; give another OUT_DIR"; exit 2; fi
ROUNDS=${ROUNDS:-3}
for round in $(seq 1 "$ROUNDS"); do
  for shape in $SHAPES; do
    for n in 1 2 4; do
      run "$OUT/round-$round.jsonl" "$n" "$shape" ddp
      [ -n "${ROWS:-}" ] && [ "$n" -gt 1 ] && run "$OUT/round-$round.jsonl" "$n" "$shape" ddp --input-grads touched-rows
    done
  done
done
if [ -n "${EXTRAS:-}" ]; then
  for shape in $SHAPES; do for n in 2 4; do run "$OUT/extras.jsonl" "$n" "$shape" ddp --grad-compression bf16; done; done
  [[ " $SHAPES " == *" 430m "* ]] && for n in 1 2 4; do run "$OUT/extras.jsonl" "$n" 430m fsdp2; done
fi
if [ -n "${TRACE:-}" ]; then
  for shape in $SHAPES; do for n in 1 2 4; do
    run "$OUT/traces.jsonl" "$n" "$shape" ddp --steps 20 --trace "$OUT/trace-$shape-x$n.json.gz"
  done; done
fi
"$PY" - "$OUT" "$ROUNDS" <<'PY'
import collections, json, statistics, sys, pathlib
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def read(name):
    path = out / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
rows = [{**r, "round": k} for k in range(1, rounds + 1) for r in read(f"round-{k}.jsonl")]
rows += [{**r, "round": "extra"} for r in read("extras.jsonl")]
nan = float("nan")
base = {(r["shape"], r["round"]): r["samples_per_s"] for r in rows
        if r["round"] != "extra" and r["strategy"] == "ddp" and r["gpus"] == 1 and r.get("input_grads", "all-reduce") == "all-reduce"}
for r in rows:  # a round's speed-up is over its own 1-GPU run (NaN if that run failed); extras over the last round's
    key = (r["shape"], rounds if r["round"] == "extra" else r["round"])
    r["speedup_vs_1gpu_ddp"] = r["samples_per_s"] / base[key] if key in base else nan
(out / "summary.json").write_text(json.dumps(rows, indent=1))
groups = collections.defaultdict(list)
for r in rows:
    variant = "+".join(v for v in (r.get("grad_compression", "none"), r.get("input_grads", "all-reduce"))
                       if v not in ("none", "all-reduce")) or "-"
    groups[(r["shape"], r["strategy"], variant, r["gpus"])].append(r)
for (shape, strategy, variant, gpus), rs in groups.items():
    s = [r["speedup_vs_1gpu_ddp"] for r in rs if r["speedup_vs_1gpu_ddp"] == r["speedup_vs_1gpu_ddp"]]
    spread = f"{statistics.median(s):.2f}x (range {min(s):.2f}-{max(s):.2f} over {len(s)} runs)" if s else "n/a (no 1-GPU baseline)"
    print(f'{shape:>5} {strategy:>5} {variant:>12} x{gpus}: step {statistics.median(r["step_ms"] for r in rs):6.2f} ms, '
          f'{statistics.median(r["samples_per_s"] for r in rs):8.0f} samples/s, speed-up {spread}, '
          f'peak {max(r["peak_memory_mb_per_gpu"] for r in rs):.0f} MiB/GPU')
PY
