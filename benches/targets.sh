#!/usr/bin/env bash
# Every issue-6 target from ONE run: the engine benchmark with its peers (every group,
# N = 1,000,000 unless CASKADE_BENCH_N says otherwise) and then the server end to end
# (benches/server.sh, SERVER_ROUNDS times), then the targets table (benches/targets.py)
# with each ratio taken between two figures of this run. About 20 minutes at the full N
# on a quiet machine.
#
# Usage: benches/targets.sh [OUT_DIR]   (default: target/targets-<time>)
# Knobs: everything engine.rs and server.sh read (CASKADE_BENCH_N, CASKADE_BENCH_SECS,
# DURATION, ...); SERVER_ROUNDS (server.sh runs, default 3: every server figure is the
# median of its rounds); SKIP_SERVER=1 runs the engine part only.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/targets-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Criterion's results of this run only, apart from any earlier run's.
export CRITERION_HOME="$OUT/criterion"
{
  echo "caskade $(git rev-parse --short HEAD), $(nproc) cores, $(date -u +%FT%TZ)"
  echo "N = ${CASKADE_BENCH_N:-1000000} keys (engine), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/run.txt"

cargo bench --locked --features bench-peers --bench engine -- --noplot 2>&1 \
  | tee "$OUT/engine.txt"
if [ "${SKIP_SERVER:-0}" != 1 ]; then
  # Several rounds, each figure's median taken (benches/targets.py): one 12 s sample per
  # workload let a target flip between two quiet runs an hour apart.
  : >"$OUT/server.tsv"
  for round in $(seq "${SERVER_ROUNDS:-3}"); do
    RESULTS_TSV="$OUT/server-$round.tsv" benches/server.sh 2>&1 | tee "$OUT/server-$round.txt"
    cat "$OUT/server-$round.tsv" >>"$OUT/server.tsv"
  done
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/run.txt"

python3 benches/targets.py --criterion "$CRITERION_HOME" --memory "$OUT/engine.txt" \
  --server "$OUT/server.tsv" | tee "$OUT/targets.md"
echo "raw outputs in $OUT" >&2
