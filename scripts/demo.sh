#!/usr/bin/env bash
# `make demo`: the main job end to end on real data (Fashion-MNIST from Debian's dataset package).
#
#   1. Fashion-MNIST IDX -> ImageFolder of PNGs (train 60,000 / test 10,000) and a balanced
#      pretraining subset list (scripts/fashion_mnist_to_imagefolder.py)
#   2. regioncl convert: train, test and the pretraining subset to shards
#   3. regioncl train: RegionCL-M, small-input ResNet-18 (configs/demo_fashion_mnist.toml)
#   4. regioncl eval knn: the learned backbone vs a randomly initialised one vs raw pixels, same
#      k (20, 200), same T (0.07), same split (bank = the 60,000 train images, queries = the
#      10,000 test images)
#   5. regioncl export: torchvision .pth and detectron2 .pkl
#   6. regioncl plot: loss terms, lr, throughput
#   7. a summary table (also in OUT/results.md)
#
# Knobs (environment): DEMO_OUT (default runs/demo), DEMO_SUBSET (pretraining images, default
# 10000), DEMO_PER_CLASS (write only N images per class and split: quick checks), DEMO_SETS (extra
# `key=value` config overrides for training, space-separated), REGIONCL_BIN, REGIONCL_PYTHON,
# REGIONCL_DATA.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${REGIONCL_BIN:-target/release/regioncl}
py=${REGIONCL_PYTHON:-.venv/bin/python}
data=${REGIONCL_DATA:-.cache/data}
out=${DEMO_OUT:-runs/demo}
subset=${DEMO_SUBSET:-10000}
per_class=${DEMO_PER_CLASS:-}
config=configs/demo_fashion_mnist.toml

start=$(date +%s)
stage() { echo "== demo [$(($(date +%s) - start))s] $*" >&2; }
for f in "$bin" "$py" "$data/fashion-mnist/train-images-idx3-ubyte.gz"; do
  [ -e "$f" ] || { echo "demo: $f missing (run \`make demo\`, which builds and fetches)" >&2; exit 2; }
done
mkdir -p "$out"

stage "Fashion-MNIST -> ImageFolder -> shards ($out/shards)"
REGIONCL_BIN=$bin REGIONCL_PYTHON=$py REGIONCL_DATA=$data \
  scripts/fashion_mnist_shards.sh "$out" "$subset" "$per_class"

stage "pretrain RegionCL-M ($config, $subset images)"
sets=(--set "data.root=$out/shards/pretrain")
for s in ${DEMO_SETS:-}; do sets+=(--set "$s"); done
train_start=$(date +%s)
"$bin" train --config "$config" --out "$out/run" --overwrite "${sets[@]}"
train_s=$(($(date +%s) - train_start))

stage "k-NN: learned vs random init vs raw pixels"
knn=(--train "$out/shards/train" --test "$out/shards/test" --k 20,200 --t 0.07 --resize 32 --crop 32)
"$bin" eval knn --checkpoint "$out/run" "${knn[@]}" --json "$out/knn-learned.json"
"$bin" eval knn --checkpoint "$out/run" "${knn[@]}" --random-init --json "$out/knn-random.json"
"$bin" eval knn --pixels "${knn[@]}" --json "$out/knn-pixels.json"

stage "export the backbone"
"$bin" export "$out/run" --to torchvision --out "$out/export/backbone_torchvision.pth"
"$bin" export "$out/run" --to detectron2 --out "$out/export/backbone_detectron2.pkl"

stage "plots"
"$bin" plot "$out/run" >/dev/null

total_s=$(($(date +%s) - start))
stage "done"
"$py" - "$out" "$train_s" "$total_s" <<'EOF'
import json, os, sys
out, train_s, total_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [("learned (RegionCL-M)", "knn-learned.json"), ("random init", "knn-random.json"),
        ("raw pixels", "knn-pixels.json")]
res = {name: json.load(open(os.path.join(out, f))) for name, f in rows}
ks = [a["k"] for a in res[rows[0][0]]["knn"]]
first = res[rows[0][0]]
lines = [
    f"Fashion-MNIST k-NN (bank: {first['num_train']} train images, queries: {first['num_test']} "
    f"test images, T = {first['temperature']}, {first['crop']} px centre view)",
    "",
    "| features | dim | " + " | ".join(f"k={k} top-1" for k in ks) + " | "
    + " | ".join(f"k={k} top-5" for k in ks) + " |",
    "|---|---|" + "---|" * (2 * len(ks)),
]
for name, _ in rows:
    r = res[name]
    acc = {a["k"]: a for a in r["knn"]}
    lines.append(f"| {name} | {r['dim']} | "
                 + " | ".join(f"{100 * acc[k]['top1']:.2f}%" for k in ks) + " | "
                 + " | ".join(f"{100 * acc[k]['top5']:.2f}%" for k in ks) + " |")
lines += ["", f"pretraining {train_s} s, whole demo {total_s} s"]
text = "\n".join(lines)
print(text)
open(os.path.join(out, "results.md"), "w").write(text + "\n")
EOF
echo "plots: $out/run/plots/  exports: $out/export/  table: $out/results.md" >&2
