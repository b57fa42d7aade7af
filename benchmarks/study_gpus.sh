#!/usr/bin/env bash
# A study over all GPUs of one host: the study's cells are dealt round-robin to the GPUs (so
# each GPU gets a mix of model sizes), each GPU runs its share alone (with its slice of the CPU cores), then
# `recengine report` joins the shares into one table and one set of plots (OUT_DIR/all).
#
#   benchmarks/study_gpus.sh STUDY OUT_DIR [more `recengine study` options, e.g. --no-train]
#   benchmarks/study_gpus.sh studies/scaling.toml runs/studies/scaling-h100
#
# Run the same command again to resume (each share keeps its finished cells); keep the same GPUs.
# Honours CUDA_VISIBLE_DEVICES (e.g. CUDA_VISIBLE_DEVICES=0,1 for two of the GPUs).
set -uo pipefail
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
STUDY=$(realpath -m "$1"); OUT=$(realpath -m "$2"); shift 2
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then IFS=, read -ra DEVICES <<< "$CUDA_VISIBLE_DEVICES"
else mapfile -t DEVICES < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | grep -E '^[0-9]+$'); fi
[ ${#DEVICES[@]} -ge 1 ] || { echo "no GPU found (nvidia-smi --query-gpu=index)"; exit 1; }
THREADS=$(( $(nproc) / ${#DEVICES[@]} )); [ "$THREADS" -ge 1 ] || THREADS=1
# One line per GPU share: the exact ids of its cells, as --only options.
mapfile -t SHARES < <("$PY" - "$STUDY" "${#DEVICES[@]}" <<'PY'
import sys
from recengine.study import load_study
study, shares = load_study(sys.argv[1]), int(sys.argv[2])
# Round-robin within each recipe, starting one GPU further for each recipe: every GPU gets a mix
# of sizes, and a recipe's matching cells (e.g. the trained amp + compile ones) land on different GPUs.
recipes = list(dict.fromkeys(cell.recipe.name for cell in study.cells))
share = [[] for _ in range(shares)]
for r, name in enumerate(recipes):
    for j, cell in enumerate(c for c in study.cells if c.recipe.name == name):
        share[(r + j) % shares].append(cell.id)
for ids in share:
    print(" ".join(f"--only {i}" for i in ids))
PY
)
[ ${#SHARES[@]} -ge 1 ] || { echo "no cells read from $STUDY"; exit 1; }
mkdir -p "$OUT"
echo "results in $OUT (run the same command again to resume)"
trap 'kill $(jobs -p) 2>/dev/null' INT TERM  # Ctrl-C stops every share, not just this script
PIDS=()
for g in "${!DEVICES[@]}"; do
  [ -n "${SHARES[g]:-}" ] || continue
  echo "GPU ${DEVICES[g]}: ${SHARES[g]//--only /}"
  # shellcheck disable=SC2086  # SHARES[g] is a list of --only ID options (ids hold no spaces or globs)
  CUDA_VISIBLE_DEVICES=${DEVICES[g]} OMP_NUM_THREADS=$THREADS TORCHINDUCTOR_COMPILE_THREADS=$THREADS \
    "$PY" -m recengine study "$STUDY" --out "$OUT/gpu$g" ${SHARES[g]} "$@" >> "$OUT/gpu$g.log" 2>&1 &
  PIDS[g]=$!
done
failed=0
for g in "${!PIDS[@]}"; do
  wait "${PIDS[g]}" || { echo "GPU ${DEVICES[g]}: its share failed (exit $?); see $OUT/gpu$g.log"; failed=1; }
done
DONE=(); for d in "$OUT"/gpu*/; do [ -f "$d/results.json" ] && DONE+=("$d"); done
[ ${#DONE[@]} -ge 1 ] || { echo "no share wrote results"; exit 1; }
"$PY" -m recengine report "${DONE[@]}" --out "$OUT/all" && echo "one table and plots: $OUT/all/results.md"
exit $failed
