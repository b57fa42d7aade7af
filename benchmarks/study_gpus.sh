#!/usr/bin/env bash
# A study over all GPUs of one host: one share of the cells per GPU (the study's recipes, i.e. the
# model sizes, dealt round-robin), each share alone on its GPU with its slice of the CPU cores,
# then one table and one set of plots from all shares (`recengine report`).
#
#   benchmarks/study_gpus.sh [STUDY] [OUT_DIR] [more `recengine study` options, e.g. --no-train]
#   benchmarks/study_gpus.sh studies/scaling.toml runs/studies/scaling-h100
#
# An interrupted run resumes: run the same command again (each share keeps its finished cells).
set -uo pipefail
cd "$(dirname "$0")/.."
STUDY=${1:-studies/scaling.toml}; OUT=${2:-runs/studies/$(basename "$STUDY" .toml)-$(date +%Y%m%d-%H%M%S)}
shift $(( $# < 2 ? $# : 2 ))
RECENGINE=${RECENGINE:-$( [ -x .venv/bin/recengine ] && echo .venv/bin/recengine || echo "python3 -m recengine" )}
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l); [ "$GPUS" -ge 1 ] || { echo "no GPU found (nvidia-smi -L)"; exit 1; }
THREADS=$(( $(nproc) / GPUS )); [ "$THREADS" -ge 1 ] || THREADS=1
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
# The study's recipe labels ([[recipes]] name), in order.
mapfile -t LABELS < <("$PY" -c 'import sys, tomllib; print("\n".join(r["name"] for r in tomllib.load(open(sys.argv[1], "rb"))["recipes"]))' "$STUDY")
mkdir -p "$OUT"
for ((g = 0; g < GPUS; g++)); do
  ONLY=()
  for ((i = g; i < ${#LABELS[@]}; i += GPUS)); do ONLY+=(--only "${LABELS[i]}-*"); done
  [ ${#ONLY[@]} -gt 0 ] || continue
  echo "GPU $g: ${ONLY[*]}"
  CUDA_VISIBLE_DEVICES=$g OMP_NUM_THREADS=$THREADS TORCHINDUCTOR_COMPILE_THREADS=$THREADS \
    $RECENGINE study "$STUDY" --out "$OUT/gpu$g" "${ONLY[@]}" "$@" > "$OUT/gpu$g.log" 2>&1 &
done
wait
$RECENGINE report "$OUT"/gpu*/ --out "$OUT/all" && echo "one table and plots: $OUT/all/results.md"
