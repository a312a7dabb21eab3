#!/usr/bin/env bash
# Builds what scripts/gpu_check.sh needs on a GPU machine that has python3 with torch but no Rust,
# and collects it in .device/ (git-ignored), which the device tool carries (64 MiB at most):
#   .device/bin/regioncl        the release binary
#   .device/bin/trainer-tests   the trainer's unit tests (the device-parametrised ones run on cuda:0)
#   .device/bin/e2e-tests       the cross-crate tests (the collective scenarios add a NCCL group)
#   .device/data/shards         a small dataset from `regioncl convert` (ImageNet-like JPEGs)
# Binaries lose their debug sections (`strip --strip-debug`); the script fails when the bundle is
# over the limit. Usage: `make gpu-bundle` (or this script, with the Makefile's environment).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
PY=${REGIONCL_PYTHON:-.venv/bin/python}
DATA=${REGIONCL_DATA:-.cache/data}
IMAGES=${GPU_BUNDLE_IMAGES:-800}
LIMIT_MIB=60
OUT=.device
TARGET=${CARGO_TARGET_DIR:-target}

rm -rf "$OUT/bin" "$OUT/data"
mkdir -p "$OUT/bin" "$OUT/data"

$CARGO build --release -p regioncl-tools
# The test executables, from cargo's JSON messages: the trainer's lib tests and the e2e `main`.
$CARGO test --release --no-run -p regioncl-trainer --lib -p regioncl-e2e --test main \
    --message-format=json-render-diagnostics |
  "$PY" -c '
import json, shutil, sys
names = {"regioncl_trainer": "trainer-tests", "main": "e2e-tests"}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        name = names.get(m["target"]["name"])
        if name:
            shutil.copy(m["executable"], sys.argv[1] + "/" + name)
            print(name, "<-", m["executable"])
' "$OUT/bin"
cp "$TARGET/release/regioncl" "$OUT/bin/regioncl"
for b in regioncl trainer-tests e2e-tests; do
  [ -x "$OUT/bin/$b" ] || { echo "gpu-bundle: $OUT/bin/$b was not built" >&2; exit 1; }
  strip --strip-debug "$OUT/bin/$b"
done
if ! grep -q libtorch_cuda <(ldd "$OUT/bin/regioncl"); then
  echo "gpu-bundle: warning: regioncl does not link libtorch_cuda: CUDA will be unavailable" >&2
fi

# The first $IMAGES ImageNet-like JPEGs, spread over the ten classes, as a dataset.
list=$(mktemp)
trap 'rm -f "$list"' EXIT
(cd "$DATA/imagenet-like" && ls -d n*/ | sort | while read -r c; do
  label=$((10#${c:1:8}))
  ls "$c" | sort | head -n $((IMAGES / 10)) | sed "s|^|${c}|; s|\$|\t${label}|"
done) > "$list"
"$TARGET/release/regioncl" convert --list "$list" "$DATA/imagenet-like" "$OUT/data/shards" --quiet

du -sh "$OUT"/bin/* "$OUT/data/shards"
total=$(du -sm "$OUT/bin" "$OUT/data" | awk '{s += $1} END {print s}')
echo "gpu-bundle: $total MiB in $OUT (limit $LIMIT_MIB MiB)"
[ "$total" -le "$LIMIT_MIB" ] || { echo "gpu-bundle: over the limit" >&2; exit 1; }
