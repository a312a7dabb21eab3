#!/usr/bin/env bash
# Same-card comparison of the training step: the Rust trainer (`regioncl bench train`) against the
# PyTorch eager step (scripts/bench_train_torch.py), ResNet-50, batch 256, bf16, channels_last,
# RegionCL-M and MoCo v2, 8-way split BN and plain BN. For the lent GPU machine (DEVICE.md): build
# here (`cargo build --release -p regioncl-tools`, copy target/release/regioncl to .device/), carry
# .device, run this there. Writes $OUT/bench_train.jsonl and prints a table last.
set -euo pipefail
BIN=${1:-.device/regioncl}
OUT=${OUT:-/tmp}
PY=${PYTHON:-python3}
export LD_LIBRARY_PATH="$($PY -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TORCH_CPP_LOG_LEVEL=ERROR
CFG=configs/regionclm_r50_imagenet.toml
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-8}
LOG="$OUT/bench_train.jsonl"
: > "$LOG"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for method in regionclm mocov2; do
  for splits in 8 1; do
    impls="chunked"; [ "$splits" = 8 ] && impls="chunked reshape"
    for impl in $impls; do
      "$BIN" bench train --config "$CFG" --method "$method" --batch 256 --bn-splits "$splits" \
        --bn-impl "$impl" --steps "$STEPS" --warmup "$WARMUP" --json | tail -1 >> "$LOG"
    done
    pimpls="demo"; [ "$splits" = 8 ] && pimpls="demo chunked"
    for impl in $pimpls; do
      $PY scripts/bench_train_torch.py --method "$method" --batch 256 --bn-splits "$splits" \
        --bn-impl "$impl" --steps "$STEPS" --warmup "$WARMUP" | tail -1 >> "$LOG"
    done
  done
done
$PY - "$LOG" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'impl':<12}{'method':<11}{'S':>3} {'bn_impl':<9}{'img/s':>9}{'ms/step':>10}")
for r in rows:
    print(f"{r.get('impl','rust'):<12}{r['method']:<11}{r['bn_splits']:>3} {r['bn_impl']:<9}"
          f"{r['img_per_s']:>9.1f}{r['ms_per_step']:>10.2f}")
PY
