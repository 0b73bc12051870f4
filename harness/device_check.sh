#!/usr/bin/env bash
# harness/device_check.sh: the GPU path checked and timed in one command (about 6 minutes on one
# H100), everything a later replicate needs to know in a few small files under $OUT.
#
#   bash harness/device_check.sh          # on a CUDA machine, with the image's own torch (no pip)
#   DRY=1 bash harness/device_check.sh    # the same stages on a CPU: micro sizes, Triton's interpreter
#
# What comes back ($OUT, default /tmp/device_check): summary.txt (each stage's exit code and
# seconds), gpu_check.json and gpu_check.log, fst100.txt and fst100_log.jsonl (one full-length run:
# its wall time, its per-step RL time and sampler/trainer log-prob gap under TF32), suite.txt,
# suite_results.json and suite_walls.json (the gpu-smoke suite with runs sharing the GPU: every
# run's wall time against the elapsed time). Models and runs go to a work folder outside $OUT,
# removed at the end (KEEP=1 keeps it). Each stage has its own time cap, and no cap runs past the
# whole budget (BUDGET_S, default 570 s on a GPU: under the 10 minutes one command may take).
set -u
cd "$(dirname "$0")/.."
R=$(pwd)
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TQDM_DISABLE=1  # no progress bars in the logs
OUT=${OUT:-/tmp/device_check}
W=$(mktemp -d /tmp/device_check_work.XXXXXX)
[[ ${KEEP:-0} == 1 ]] || trap 'rm -rf "$W"' EXIT
mkdir -p "$OUT"
S=$OUT/summary.txt
T0=$(date +%s)
if [[ ${DRY:-0} == 1 ]]; then  # a CPU: the check's logic, at micro sizes, one thread per process
  export TRITON_INTERPRET=1
  DEV=cpu; SMOKE=--smoke; RUN_PRESET=micro; SUITE_PRESET=micro; JOBS="--jobs 2"
  THREADS="--threads 1"; X=4; B=${BUDGET_S:-1800}
else
  unset TRITON_INTERPRET
  DEV=cuda; SMOKE=; RUN_PRESET=gpu; SUITE_PRESET=gpu-smoke; JOBS=; THREADS=; X=1
  B=${BUDGET_S:-570}
fi

# a stage's cap: its own (times X on a CPU), at most what is left of the budget
cap() { local l=$(( B - ($(date +%s) - T0) )) c=$(( $1 * X )); (( l < c )) && c=$l; (( c < 5 )) && c=5; echo $c; }
stage() {  # stage NAME CAP_S CMD...: run CMD under its cap, log its exit code and seconds
  local n=$1 c t rc; c=$(cap "$2"); shift 2; t=$(date +%s)
  timeout -k 5 "$c" "$@"; rc=$?
  echo "$n rc=$rc $(( $(date +%s) - t ))s (cap ${c}s)" >> "$S"
}

{ echo "device check $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null) DRY=${DRY:-0}"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda, 'cpus', __import__('os').cpu_count())"
} > "$S" 2>&1

# 1 (~4 min on a GPU) gpu_check: the CUDA test file, kernels, model, throughput, a 400-step base and
# a 12-step fst run through the command line, the numerics (log-prob gap under TF32 and without,
# repeatable gradients, the CUDA-graph decode at the RL shape), determinism, kill and resume
GC=$(cap 300)
stage gpu_check 300 python3 -m harness.gpu_check $SMOKE --out "$OUT" --work "$W/gc" \
  --budget-s $(( GC > 30 ? GC - 15 : GC )) > "$OUT/gpu_check.log" 2>&1
BASE=$W/gc/base/model.pt
[[ -f $BASE ]] || stage base 60 python3 train.py pretrain --preset "$RUN_PRESET" --device $DEV \
  $THREADS --steps 300 --out "$W/gc/base" > /dev/null 2>&1

# 2 (~1 min) one full-length fst run on that base: its wall time sizes a replicate; its log holds
# the RL step time and the sampler/trainer log-prob gap (logp_gap) of every step, under TF32
stage fst100 90 python3 train.py run --preset "$RUN_PRESET" --device $DEV $THREADS \
  --method fst --task cipher --init "$BASE" --out "$W/fst100" > "$OUT/fst100.txt" 2>&1
cp "$W/fst100/log.jsonl" "$OUT/fst100_log.jsonl" 2>/dev/null

# 3 (~2 min) the whole suite at the gpu model size (gpu-smoke), runs sharing the GPU (--jobs'
# default on CUDA), the report on the device; in its own folder, so nothing earlier is reused
stage suite 150 bash -c 'cd "$1" && shift && exec "$@"' _ "$W" python3 "$R/train.py" \
  --preset "$SUITE_PRESET" --device $DEV $JOBS $THREADS > "$OUT/suite.txt" 2>&1
cp "$W/runs/$SUITE_PRESET/results.json" "$OUT/suite_results.json" 2>/dev/null
python3 - "$W/runs/$SUITE_PRESET" > "$OUT/suite_walls.json" 2>/dev/null <<'PY'
import glob, json, os, sys
root = sys.argv[1]
walls = {os.path.relpath(os.path.dirname(p), root): round(json.load(open(p))["wall_s"], 1)
         for p in sorted(glob.glob(os.path.join(root, "b*", "*", "*", "s*", "summary.json")))}
base = json.load(open(os.path.join(root, "b0", "base", "metrics.json")))
print(json.dumps({"base_wall_s": round(base["wall_s"], 1), "runs": len(walls),
                  "runs_wall_s_sum": round(sum(walls.values()), 1), "run_wall_s": walls}, indent=1))
PY

echo "total $(( $(date +%s) - T0 ))s" >> "$S"
cat "$S"
