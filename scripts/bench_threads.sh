#!/usr/bin/env bash
# The demo's training speed against the machine's load: img/s of `regioncl train` with
# run.threads = 0 (adapts to the cores other processes leave), 2 and 1 (fixed), on an idle machine
# and beside one busy process (`yes > /dev/null`), REPS times each in turn; prints one line per run
# and the medians.
#
# Usage: scripts/bench_threads.sh SHARDS [STEPS=40] [REPS=3]
#   SHARDS: a pretraining dataset made by `regioncl convert` (`make demo` writes
#   runs/demo/shards/pretrain). REGIONCL_BIN overrides target/release/regioncl.
set -euo pipefail
cd "$(dirname "$0")/.."
shards=${1:?usage: scripts/bench_threads.sh SHARDS [STEPS] [REPS]}
steps=${2:-40}
reps=${3:-3}
bin=${REGIONCL_BIN:-target/release/regioncl}
out=$(mktemp -d)
trap 'rm -rf "$out"; [ -n "${busy:-}" ] && kill "$busy" 2>/dev/null; true' EXIT

one() { # threads load
  local t=$1 load=$2 log rate threads
  busy=
  if [ "$load" = busy ]; then yes > /dev/null & busy=$!; fi
  log=$("$bin" train --config configs/demo_fashion_mnist.toml --out "$out/run" --overwrite \
    --set "data.root=$shards" --set "run.max_steps=$steps" --set "run.threads=$t" 2>&1)
  if [ -n "$busy" ]; then kill "$busy"; busy=; fi
  # The mean of the last 3 logged windows (10 steps each): the first holds the start-up.
  rate=$(grep -o '[0-9.]* img/s' <<<"$log" | tail -n 3 | awk '{s += $1} END {printf "%.1f", s / NR}')
  threads=$(grep -o 'threads [0-9]*' <<<"$log" | awk '{print $2}' | paste -sd, -)
  echo "$t $load $rate"
  echo "run.threads=$t load=$load: $rate img/s (threads per window: $threads)" >&2
}

results=$(for _ in $(seq "$reps"); do
  for load in idle busy; do
    for t in 0 2 1; do one "$t" "$load"; done
  done
done)
echo "median of $reps runs, img/s:"
for t in 0 2 1; do
  idle=$(awk -v t="$t" '$1 == t && $2 == "idle" {print $3}' <<<"$results" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
  busy=$(awk -v t="$t" '$1 == t && $2 == "busy" {print $3}' <<<"$results" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
  awk -v t="$t" -v i="$idle" -v b="$busy" 'BEGIN {printf "run.threads=%s  idle %7.1f  busy %7.1f  ratio %.2f\n", t, i, b, b / i}'
done
