#!/usr/bin/env bash
# The one command that verifies the GPU path on a machine with one CUDA GPU, python3 with torch
# 2.11 and no Rust (the lent GPU machine). Build here first: `make gpu-bundle` collects the
# binaries and a small shard dataset in .device/, then (README, "Checking a GPU machine"):
#   run(command="scripts/gpu_check.sh", carry=[".device"], timeout_s=540)
#
# Steps, each under its own time limit, each giving rows of the table printed last:
#   tests   the trainer's device-parametrised unit tests (their CPU and cuda:0 cases) and the
#           e2e collective scenarios (2 Gloo ranks, a Gloo group of one, a NCCL group of one)
#   step    the same-card step table: `regioncl bench train` against scripts/bench_train_torch.py,
#           ResNet-50, batch 256, bf16, channels_last, RegionCL-M and MoCo v2, with 8-way split BN
#           (ours: contiguous chunks; PyTorch: the MoCo demo's reshape, and chunks) and plain BN
#   e2e     200 steps of `regioncl train` from the bundle's shards: img/s and data-wait %
#   nccl    `torchrun --nproc-per-node 1 regioncl train` with run.dist_backend = nccl (a real NCCL
#           group of one: gradient all-reduce, broadcast, shuffle-BN, SyncBN for SimSiam) against
#           the same run as one plain process
#   memory  the peak device memory of each method's ImageNet recipe at batch 256, and RegionCL-M at
#           batch 1024 on the one GPU
# Writes $OUT/gpu_check.json (every figure), $OUT/gpu_check.log (all output), $OUT/bench.jsonl (the
# raw benchmark lines) and $OUT/e2e_metrics.jsonl; prints the table last. A failing step is a row
# marked FAIL; the script then exits 1. The whole check keeps to GPU_CHECK_BUDGET seconds (default
# 480 on the GPU, under the device tool's timeout_s=540; 3600 for the rehearsal): each step's limit is cut to what is left, and a step
# with under 10 s left is skipped (a FAIL row saying so), so the table is always printed.
#
#   scripts/gpu_check.sh --cpu   the rehearsal: the same steps at tiny sizes on the CPU (bf16,
#                                channels_last, Gloo for NCCL), proving the plumbing without a GPU
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
[ "${1:-}" = "--cpu" ] && MODE=cpu
B=${BUNDLE:-.device}
OUT=${OUT:-/tmp/regioncl-gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
LOG=$OUT/gpu_check.log
ROWS=$WORK/rows.jsonl
BENCH=$OUT/bench.jsonl
: > "$LOG"
: > "$ROWS"
: > "$BENCH"

BIN=$PWD/$B/bin/regioncl
SHARDS=$PWD/$B/data/shards
for f in "$BIN" "$B/bin/trainer-tests" "$B/bin/e2e-tests" "$SHARDS/manifest.json"; do
  [ -e "$f" ] || { echo "gpu_check: $f missing: run \`make gpu-bundle\` first" >&2; exit 2; }
done
TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')/lib
export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export TORCH_CPP_LOG_LEVEL=ERROR
export REGIONCL_BIN=$BIN REGIONCL_PYTHON=$PY

if [ "$MODE" = gpu ]; then
  DEVICE=cuda BACKEND=nccl ARCH=resnet50 SIZE=224 BATCH=256 BIG=1024
  WARMUP=4 STEPS=12 E2E_STEPS=200 DIST_STEPS=20 TEST_THREADS=4
  BASE=() TINY=(--set run.device=cuda --set run.threads=0) TORCH=() BUDGET=${GPU_CHECK_BUDGET:-480}
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$LOG" 2>&1
else
  DEVICE=cpu BACKEND=gloo ARCH=resnet18 SIZE=32 BATCH=16 BIG=32
  WARMUP=1 STEPS=2 E2E_STEPS=6 DIST_STEPS=4 TEST_THREADS=2
  BASE=(--config configs/tiny_cpu.toml --set model.width=8) TINY=(--set run.device=cpu)
  # The tiny recipe's 256-key queue for the PyTorch reference too; no GPU budget to keep to.
  TORCH=(--queue 256) BUDGET=${GPU_CHECK_BUDGET:-3600}
fi

# What this mode runs, and what the GPU mode runs (the rehearsal says both, so its log tells what a
# GPU machine will do).
plan() {
  cat <<EOF
gpu_check: $1
  tests   trainer unit tests (device-parametrised: cpu$2) + e2e collective scenarios
  step    regioncl bench train vs scripts/bench_train_torch.py: $3, regionclm and mocov2,
          bn_splits 8 and 1, bf16, channels_last, $4 timed steps
  e2e     $5 steps of regioncl train from .device/data/shards (img/s, data-wait %)
  nccl    torchrun --nproc-per-node 1 regioncl train, run.dist_backend=$6, vs one plain process
  memory  peak memory of the six methods at batch $7, RegionCL-M at batch $8
EOF
}
if [ "$MODE" = gpu ]; then
  plan "GPU mode (cuda:0)" " and cuda:0" "ResNet-50 224 px batch 256 on cuda" 12 200 nccl \
    "256 (device, tensors)" 1024
else
  plan "CPU rehearsal (no GPU used; the plumbing of every step at tiny sizes)" "" \
    "ResNet-18 32 px batch 16 on the cpu" 2 6 gloo "16 (process RSS)" 32
  echo "On a GPU machine, the same script without --cpu runs:"
  plan "GPU mode (cuda:0)" " and cuda:0" "ResNet-50 224 px batch 256 on cuda" 12 200 nccl \
    "256 (device, tensors)" 1024 | tail -n +2
fi | tee -a "$LOG"

# The base config of a method's runs: its ImageNet recipe on the GPU, the tiny CPU recipe here.
recipe() {
  if [ "$MODE" = gpu ]; then echo "--config configs/$1_r50_imagenet.toml"; else echo "${BASE[*]}"; fi
}

# Appends a row: step, ok (true/false), seconds, then a JSON object of figures.
row() { printf '{"step": "%s", "ok": %s, "secs": %s, "figures": %s}\n' "$1" "$2" "$3" "$4" >> "$ROWS"; }

# Runs "$@" under `timeout LIMIT`, its output appended to the log and kept in $WORK/NAME.out.
# Returns the command's status.
DEADLINE=$(($(date +%s) + BUDGET))
run_step() {
  local name=$1 limit=$2
  shift 2
  local left=$((DEADLINE - $(date +%s)))
  if [ "$left" -lt 10 ]; then
    echo "=== $name: skipped, the ${BUDGET}s budget is spent" | tee -a "$LOG" > "$WORK/$name.out"
    return 124
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  echo "=== $name: $*" >> "$LOG"
  timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.out" 2>&1
  local rc=$?
  cat "$WORK/$name.out" >> "$LOG"
  [ $rc -eq 124 ] && echo "=== $name: timed out after ${limit}s" >> "$LOG"
  return $rc
}

now() { date +%s.%N; }
secs() { "$PY" -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$1" "$(now)"; }

# --- tests: every device-parametrised unit test, and the collective scenarios ------------------
t0=$(now)
ok=true
run_step trainer-tests 240 "$B/bin/trainer-tests" --test-threads="$TEST_THREADS" \
  shim:: gpu_augment:: memory:: runtime:: bn:: loss:: swap:: queue:: ema:: optim:: model:: \
  method::tests::every_method_steps_on_every_runtime || ok=false
run_step e2e-tests 240 "$B/bin/e2e-tests" --test-threads=2 dist:: --skip dist_train \
  || ok=false
passed=$(cat "$WORK/trainer-tests.out" "$WORK/e2e-tests.out" | grep -o '[0-9]* passed' |
  awk '{s += $1} END {print s + 0}')
failed=$(cat "$WORK/trainer-tests.out" "$WORK/e2e-tests.out" | grep -o '[0-9]* failed' |
  awk '{s += $1} END {print s + 0}')
row tests "$ok" "$(secs "$t0")" "{\"passed\": $passed, \"failed\": $failed}"

# --- step: the same-card step table, ours against PyTorch eager ------------------------------
t0=$(now)
ok=true
for method in regionclm mocov2; do
  for splits in 8 1; do
    # shellcheck disable=SC2046 # the recipe's words
    run_step "bench-$method-$splits" 120 "$BIN" bench train $(recipe "$method") --method "$method" \
      --arch "$ARCH" --size "$SIZE" --batch "$BATCH" --bn-splits "$splits" --device "$DEVICE" \
      --precision bf16 --channels-last true --warmup "$WARMUP" --steps "$STEPS" --json || ok=false
    tail -n 1 "$WORK/bench-$method-$splits.out" | grep '^{' >> "$BENCH"
    impls=demo
    [ "$splits" = 8 ] && impls="demo chunked"
    for impl in $impls; do
      run_step "torch-$method-$splits-$impl" 120 "$PY" scripts/bench_train_torch.py \
        --method "$method" --arch "$ARCH" --size "$SIZE" --batch "$BATCH" --bn-splits "$splits" \
        --bn-impl "$impl" --device "$DEVICE" --warmup "$WARMUP" --steps "$STEPS" "${TORCH[@]}" \
        || ok=false
      tail -n 1 "$WORK/torch-$method-$splits-$impl.out" | grep '^{' >> "$BENCH"
    done
  done
done
row step "$ok" "$(secs "$t0")" "$("$PY" - "$BENCH" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = {}
for r in rows:
    key = f"{r['method']} S={r['bn_splits']} {r.get('impl', 'rust-tch')} {r['bn_impl']}"
    out[key] = round(r["img_per_s"], 1)
print(json.dumps(out))
PY
)"

# --- e2e: training from shards, img/s and data-wait ------------------------------------------
t0=$(now)
ok=true
if [ "$MODE" = gpu ]; then
  E2E=(--config configs/regionclm_r50_imagenet.toml --set optim.batch_size="$BATCH")
else
  E2E=("${BASE[@]}" --set optim.batch_size="$BATCH" --set run.precision=bf16
       --set run.channels_last=true)
fi
run_step e2e 300 "$BIN" train "${E2E[@]}" "${TINY[@]}" --out "$WORK/e2e" \
  --set data.source=shards --set data.root="$SHARDS" --set run.max_steps="$E2E_STEPS" \
  --set run.log_every=1 --set run.checkpoint_every=0 || ok=false
cp "$WORK/e2e/metrics.jsonl" "$OUT/e2e_metrics.jsonl" 2>/dev/null || ok=false
row e2e "$ok" "$(secs "$t0")" "$("$PY" - "$OUT/e2e_metrics.jsonl" <<'PY'
import json, sys
try:
    recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
except OSError:
    recs = []
steps = [r for r in recs if "img_per_s" in r]
tail = steps[len(steps) // 10:]  # past the warm-up (cuDNN autotuning, the loader's first batches)
if tail:
    print(json.dumps({"steps": len(steps),
                      "img_per_s": round(sum(r["img_per_s"] for r in tail) / len(tail), 1),
                      "data_wait_pct": round(100 * sum(r["data_wait"] for r in tail) / len(tail), 2),
                      "last_loss": steps[-1]["loss"]}))
else:
    print("{}")
PY
)"

# --- nccl: a NCCL group of one under torchrun against one plain process ------------------------
t0=$(now)
ok=true
for method in regionclm simsiam; do
  common=(train --config configs/tiny_cpu.toml "${TINY[@]}" --set method="$method"
          --set model.width=8 --set run.precision=bf16 --set run.channels_last=true
          --set data.source=shards --set data.root="$SHARDS" --set data.image_size=32
          --set run.max_steps="$DIST_STEPS" --set run.log_every=1 --set run.checkpoint_every=0)
  run_step "single-$method" 120 "$BIN" "${common[@]}" --out "$WORK/single-$method" || ok=false
  run_step "torchrun-$method" 180 "$PY" -m torch.distributed.run --no-python \
    --nproc-per-node 1 --master-port $((29500 + RANDOM % 1000)) \
    "$BIN" "${common[@]}" --set run.dist_backend="$BACKEND" --out "$WORK/torchrun-$method" \
    || ok=false
  grep -q "rank 0/1" "$WORK/torchrun-$method.out" || ok=false
done
row nccl "$ok" "$(secs "$t0")" "$("$PY" - "$WORK" <<'PY'
import json, os, sys
out = {}
for m in ("regionclm", "simsiam"):
    def losses(kind):
        p = os.path.join(sys.argv[1], f"{kind}-{m}", "metrics.jsonl")
        try:
            return [json.loads(l)["loss"] for l in open(p) if '"loss"' in l]
        except OSError:
            return []
    a, b = losses("single"), losses("torchrun")
    out[f"{m} steps"] = len(b)
    if a and len(a) == len(b):
        out[f"{m} max |loss diff|"] = max(abs(x - y) for x, y in zip(a, b))
print(json.dumps(out))
PY
)"

# --- memory: each method's recipe at the benchmark batch, RegionCL-M at the big batch ----------
t0=$(now)
ok=true
: > "$WORK/memory.jsonl"
for method in regionclm mocov2 regioncld densecl regioncls simsiam; do
  # shellcheck disable=SC2046
  run_step "mem-$method" 120 "$BIN" bench train $(recipe "$method") --method "$method" --arch "$ARCH" \
    --size "$SIZE" --batch "$BATCH" --device "$DEVICE" --precision bf16 --warmup 1 --steps 2 \
    --json || ok=false
  tail -n 1 "$WORK/mem-$method.out" | grep '^{' >> "$WORK/memory.jsonl"
done
# shellcheck disable=SC2046
run_step mem-big 180 "$BIN" bench train $(recipe regionclm) --method regionclm --arch "$ARCH" \
  --size "$SIZE" --batch "$BIG" --device "$DEVICE" --precision bf16 --warmup 1 --steps 2 --json \
  || ok=false
tail -n 1 "$WORK/mem-big.out" | grep '^{' >> "$WORK/memory.jsonl"
cat "$WORK/memory.jsonl" >> "$BENCH"
row memory "$ok" "$(secs "$t0")" "$("$PY" - "$WORK/memory.jsonl" <<'PY'
import json, sys
out = {}
for l in open(sys.argv[1]):
    if l.strip():
        r = json.loads(l)
        out[f"{r['method']} b{r['batch']} GiB ({r['peak_scope']})"] = round(r["peak_bytes"] / 2**30, 2)
print(json.dumps(out))
PY
)"

# --- the summary --------------------------------------------------------------------------
"$PY" - "$ROWS" "$OUT/gpu_check.json" "$MODE" "$LOG" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
device = open(sys.argv[4]).readline().strip() if sys.argv[3] == "gpu" else "cpu rehearsal"
json.dump({"mode": sys.argv[3], "device": device, "steps": rows}, open(sys.argv[2], "w"), indent=1)
print(f"gpu_check ({sys.argv[3]}: {device})")
print(f"{'step':<7} {'ok':<5} {'secs':>6}  figures")
for r in rows:
    figs = r["figures"] or {"": ""}
    for i, (k, v) in enumerate(figs.items()):
        head = f"{r['step']:<7} {'ok' if r['ok'] else 'FAIL':<5} {r['secs']:>6}" if i == 0 else " " * 20
        print(f"{head}  {k}: {v}" if k else head)
if sys.argv[3] == "cpu":
    print("CPU rehearsal: no GPU was used and the figures are not GPU figures; on a GPU machine run")
    print("`make gpu-bundle` here, then scripts/gpu_check.sh there with .device/ carried (README).")
sys.exit(0 if all(r["ok"] for r in rows) else 1)
PY
