#!/usr/bin/env bash
# Fashion-MNIST as regioncl shards, for `make demo` and `make compare`:
#
#   OUT/fashion-mnist/        ImageFolder of PNGs (scripts/fashion_mnist_to_imagefolder.py)
#   OUT/shards/train          60,000 train images
#   OUT/shards/test           10,000 test images
#   OUT/shards/pretrain       a balanced SUBSET of the train images (the pretraining set)
#
# Usage: scripts/fashion_mnist_shards.sh OUT SUBSET [PER_CLASS]  (PER_CLASS: only N images per
# class and split, for quick checks). Environment: REGIONCL_BIN, REGIONCL_PYTHON, REGIONCL_DATA.
# Shards that are complete already are kept.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$1
subset=$2
per_class=${3:-}
bin=${REGIONCL_BIN:-target/release/regioncl}
py=${REGIONCL_PYTHON:-.venv/bin/python}
data=${REGIONCL_DATA:-.cache/data}
fm=$out/fashion-mnist

"$py" scripts/fashion_mnist_to_imagefolder.py "$data/fashion-mnist" "$fm" \
  --subset "$subset" ${per_class:+--per-class "$per_class"}
convert() {  # convert OUT_NAME ARGS...: unless OUT/shards/OUT_NAME is complete
  local dst=$out/shards/$1
  shift
  [ -f "$dst/manifest.json" ] || "$bin" convert --quiet "$@" "$dst"
}
convert train "$fm/train"
convert test "$fm/test"
convert pretrain --list "$fm/train-$subset.tsv" --root "$fm/train"
