#!/usr/bin/env bash
# `make compare`: RegionCL-M against MoCo v2 on Fashion-MNIST at the demo's budget
# (configs/demo_fashion_mnist.toml: 624 steps of batch 128 on a balanced 10,000-image subset),
# three seeds each; k-NN, linear and few-shot linear (1% and 10% of the labels) on the 60,000 /
# 10,000 split; mean ± std, the difference and whether it exceeds the seed noise
# (`regioncl compare`). Killed? Run it again: finished runs are reused, the others resume.
#
# Environment: COMPARE_OUT (default runs/compare), COMPARE_PAIRS (default regionclm:mocov2; add
# regioncld:densecl,regioncls:simsiam), COMPARE_SEEDS (default 0,1,2), COMPARE_SETS (extra
# `key=value` overrides, space-separated), REGIONCL_BIN, REGIONCL_PYTHON, REGIONCL_DATA.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${REGIONCL_BIN:-target/release/regioncl}
out=${COMPARE_OUT:-runs/compare}
data_out=$out/data

scripts/fashion_mnist_shards.sh "$data_out" 10000
sets=(--set "data.root=$data_out/shards/pretrain")
for s in ${COMPARE_SETS:-}; do sets+=(--set "$s"); done
"$bin" compare --config configs/demo_fashion_mnist.toml "${sets[@]}" \
  --pairs "${COMPARE_PAIRS:-regionclm:mocov2}" --seeds "${COMPARE_SEEDS:-0,1,2}" \
  --train "$data_out/shards/train" --test "$data_out/shards/test" --resize 32 --crop 32 \
  --out "$out"
