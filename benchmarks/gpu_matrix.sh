#!/usr/bin/env bash
# The whole GPU training-speed matrix in one go, on one GPU (about 20 minutes: compiling with
# CUDA graphs took 90 s at 130M and 200 s at 430M on H100; use SHAPES=... to split it):
#   85M / 130M / 430M Electronics shapes x precision fp32, amp (bf16) x compiler eager, torch-compile,
#   amp+compile runs with length grouping (2,000 timed steps each), full-ranking evaluation of 730,000 users at 130M,
#   and the 130M adapter steps (frozen base, LoRA, iLoRA). Run it alone on the machine: `recengine bench` warns
#   when the host or the GPU is shared, and such timings are not this setting's.
#
# Usage (from the repository root, with recengine installed in .venv or on PATH):
#   benchmarks/gpu_matrix.sh [OUT_DIR]        # default: benchmarks/results/gpu-<date>
#
# Each `recengine bench` call writes its JSON after every setting and runs under its own
# time limit, so a slow compile costs that call's remaining settings, never the whole script.
# The most important settings come first (amp + torch-compile); fp32 + compile comes last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
BENCH=${BENCH:-$( [ -x .venv/bin/recengine ] && echo .venv/bin/recengine || echo "python3 -m recengine" )}  # a command, may hold spaces
RECIPE=recipes/quickstart.toml   # only its train/eval defaults matter: --shape replaces data and model
STEP_ARGS="--users 100000 --steps 20 --warmup 6 --data-batches 100 --eval-users 0"
# reduce-overhead (CUDA graphs) with static shapes was the fastest setting measured on H100:
# one graph per (trimmed length, mask budget) pair, recorded once and replayed.
COMPILE="--matrix compiler=torch-compile compiler.mode=reduce-overhead compiler.dynamic=false"

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>/dev/null || .venv/bin/python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} | tee "$OUT/machine.txt"

run() {  # run LIMIT_S NAME ARGS...: one bench call under a time limit, its log beside its JSON
  local limit=$1 name=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local started=$SECONDS
  timeout --signal=INT --kill-after=10 "$limit" $BENCH bench "$RECIPE" run.device=cuda "$@" --json "$OUT/$name.json" \
    > "$OUT/$name.log" 2>&1
  echo "   exit $? after $((SECONDS - started))s"; tail -n 12 "$OUT/$name.log"
}

# Most important first.
SHAPES=${SHAPES:-electronics-130m electronics-85m electronics-430m}  # e.g. SHAPES=electronics-430m to split the matrix over calls
for shape in $SHAPES; do
  run 240 "$shape-amp-compile" --shape "$shape" --matrix precision=amp $COMPILE $STEP_ARGS
  run 35 "$shape-eager" --shape "$shape" --matrix precision=amp,fp32 --matrix compiler=eager $STEP_ARGS
done
# Evaluation of all 730,000 users at 130M, bf16 (no training steps).
run 45 electronics-130m-eval730k --shape electronics-130m --matrix precision=amp --matrix compiler=eager \
  --users 730000 --steps 0 --data-batches 0 --eval-users -1
# Length grouping: batches of similar lengths, trimmed far below 50 (changes batch composition, not the data).
# Shapes vary, so dynamic shapes (one compile, one CUDA graph per shape) and a long window: the mean
# over 2,000 steps is the steady-state rate once every shape's graph is recorded.
for shape in $SHAPES; do
  run 240 "$shape-grouped" --shape "$shape" --matrix precision=amp --matrix compiler=torch-compile compiler.mode=reduce-overhead \
    compiler.dynamic=true train.length_grouping=64 --users 100000 --steps 2000 --warmup 300 --data-batches 0 --eval-users 0
done
for shape in $SHAPES; do
  run 240 "$shape-fp32-compile" --shape "$shape" --matrix precision=fp32 $COMPILE $STEP_ARGS
done
# Adapters at 130M (issue 6): the frozen base (LoRA rank 1 on `out` only, so the backward still runs
# through every layer), LoRA r8 and iLoRA 4x2 on all six targets; compiled with CUDA graphs, then eager.
ADAPT="--shape electronics-130m --users 100000 --data-batches 0 --eval-users 0 --matrix precision=amp"
GRAPHS="--matrix compiler=torch-compile compiler.mode=reduce-overhead compiler.dynamic=true --steps 300 --warmup 30"
run 120 adapter-frozen-graphs $ADAPT $GRAPHS --matrix adapter=lora adapter.rank=1 'adapter.targets=["out"]'
run 120 adapter-lora-graphs $ADAPT $GRAPHS --matrix adapter=lora
run 150 adapter-ilora-graphs $ADAPT $GRAPHS --matrix adapter=ilora
run 60 adapter-frozen-eager $ADAPT --matrix compiler=eager --steps 100 --warmup 10 --matrix adapter=lora adapter.rank=1 'adapter.targets=["out"]'
run 60 adapter-eager $ADAPT --matrix compiler=eager --steps 100 --warmup 10 --matrix adapter=lora,ilora

echo "results in $OUT"
