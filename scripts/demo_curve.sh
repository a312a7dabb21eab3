#!/usr/bin/env bash
# The demo's k-NN against pretraining time: RegionCL-M from configs/demo_fashion_mnist.toml trained
# for EPOCHS epochs (the demo trains 8), a checkpoint every EVERY epochs, each checkpoint evaluated
# with the demo's k-NN protocol (bank = the 60,000 train images, queries = the 10,000 test images,
# k = 20 and 200, T = 0.07, 32 px centre view), beside raw pixels. Where does learned pass pixels?
#
# Usage: scripts/demo_curve.sh [EPOCHS=48] [EVERY=6]
# Environment: CURVE_OUT (default runs/curve), CURVE_SETS (extra `key=value` overrides,
# space-separated), CURVE_IMG_PER_S (the speed that turns steps into training time; default the
# run's median logged speed; give the idle speed when the run shared the machine),
# REGIONCL_BIN, REGIONCL_PYTHON, REGIONCL_DATA. Writes CURVE_OUT/curve.md and
# curve.json. Killed? Run it again: training resumes, finished evaluations are kept.
#
# Each checkpoint sits partway down the cosine schedule of the whole run, so a run ending there
# would do a little better: the curve is a lower bound on the best k-NN at each budget.
set -euo pipefail
cd "$(dirname "$0")/.."

epochs=${1:-48}
every=${2:-6}
bin=${REGIONCL_BIN:-target/release/regioncl}
py=${REGIONCL_PYTHON:-.venv/bin/python}
out=${CURVE_OUT:-runs/curve}
subset=10000
batch=128

scripts/fashion_mnist_shards.sh "$out/data" "$subset"
shards=$out/data/shards
steps_per_epoch=$((subset / batch))
sets=(--set "data.root=$shards/pretrain" --set "optim.epochs=$epochs"
  --set "run.checkpoint_every=$((every * steps_per_epoch))" --set "run.keep_checkpoints=1000")
for s in ${CURVE_SETS:-}; do sets+=(--set "$s"); done
start=(--overwrite)
[ -f "$out/run/config.toml" ] && start=(--resume)
"$bin" train --config configs/demo_fashion_mnist.toml --out "$out/run" "${start[@]}" "${sets[@]}"

knn=(--train "$shards/train" --test "$shards/test" --k 20,200 --t 0.07 --resize 32 --crop 32)
[ -f "$out/knn-pixels.json" ] || "$bin" eval knn --pixels "${knn[@]}" --json "$out/knn-pixels.json"
[ -f "$out/knn-random.json" ] ||
  "$bin" eval knn --checkpoint "$out/run" --random-init "${knn[@]}" --json "$out/knn-random.json"
for ckpt in "$out"/run/checkpoints/step-*; do
  json=$out/knn-$(basename "$ckpt").json
  [ -f "$json" ] || "$bin" eval knn --checkpoint "$ckpt" "${knn[@]}" --json "$json"
done

"$py" - "$out" "$steps_per_epoch" "${CURVE_IMG_PER_S:-}" <<'PY'
import glob, json, os, sys
out, spe, speed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# The time axis: steps at the run's median speed (robust to windows slowed by other work on the
# machine), and the wall time the run took to reach them.
speeds, elapsed = [], {}
for line in open(os.path.join(out, "run", "metrics.jsonl")):
    r = json.loads(line)
    if "img_per_s" in r:
        speeds.append(r["img_per_s"])
        elapsed[r["step"] + 1] = r["elapsed_s"]
speeds.sort()
median = float(speed) if speed else speeds[len(speeds) // 2]
source = "the given speed" if speed else "the run's median speed"
def top1(path):
    return {a["k"]: 100 * a["top1"] for a in json.load(open(path))["knn"]}
rows = []
for path in sorted(glob.glob(os.path.join(out, "knn-step-*.json"))):
    step = int(path.rsplit("-", 1)[1].split(".")[0])
    near = max((s for s in elapsed if s <= step), default=None)
    rows.append({"step": step, "epoch": step / spe, "train_s": step * 128 / median,
                 "wall_s": elapsed.get(near), "knn": top1(path)})
pixels, random = top1(os.path.join(out, "knn-pixels.json")), top1(os.path.join(out, "knn-random.json"))
ks = sorted(pixels)
lines = [f"Training time: steps x 128 images at {source}, {median:.0f} img/s.", "",
         "| epochs | steps | training time | " + " | ".join(f"k={k} top-1" for k in ks) + " |",
         "|---|---|---|" + "---|" * len(ks)]
for r in rows:
    lines.append(f"| {r['epoch']:g} | {r['step']} | {r['train_s'] / 60:.1f} min | "
                 + " | ".join(f"{r['knn'][k]:.2f}%" for k in ks) + " |")
lines.append("| random init | 0 | 0 | " + " | ".join(f"{random[k]:.2f}%" for k in ks) + " |")
lines.append("| raw pixels | | | " + " | ".join(f"{pixels[k]:.2f}%" for k in ks) + " |")
lines.append("")
for k in ks:
    # The first checkpoint from which every later one is above raw pixels at this k.
    above = [r["knn"][k] > pixels[k] for r in rows]
    first = next((i for i in range(len(rows)) if all(above[i:])), None)
    if first is None:
        best = max(r["knn"][k] for r in rows) if rows else float("nan")
        lines.append(f"k={k}: below raw pixels ({pixels[k]:.2f}%) at every checkpoint; "
                     f"best {best:.2f}%.")
    else:
        r = rows[first]
        lines.append(f"k={k}: above raw pixels ({pixels[k]:.2f}%) from epoch {r['epoch']:g} "
                     f"({r['step']} steps, {r['train_s'] / 60:.1f} min) on.")
text = "\n".join(lines) + "\n"
open(os.path.join(out, "curve.md"), "w").write(text)
json.dump({"rows": rows, "pixels": pixels, "random_init": random, "median_img_per_s": median},
          open(os.path.join(out, "curve.json"), "w"), indent=1)
print(text, end="")
PY
