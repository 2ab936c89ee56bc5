#!/usr/bin/env bash
# Every issue-6 target from ONE run: the engine benchmark with its peers (every group,
# N = 1,000,000 unless CASKADE_BENCH_N says otherwise) and the server end to end
# (benches/server.sh), in ROUNDS rounds, then the targets table (benches/targets.py)
# with each ratio taken between two figures of this run. Round 1 runs every engine
# group, the later rounds W2 and W3 only (the figures that swing most between runs:
# gets bound by cache misses, durable puts by the disk's fsync time); every round runs
# the server part. A figure measured in several rounds is their median. After the
# rounds, benches/put-ratio.sh takes caskade's durable PUT and Redis SET in turn (the
# PUT target once more, drift-proof). About 35 minutes at the full N on a quiet
# machine.
#
# Usage: benches/targets.sh [OUT_DIR]   (default: target/targets-<time>)
# Knobs: everything engine.rs and server.sh read (CASKADE_BENCH_N, CASKADE_BENCH_SECS,
# DURATION, ...); ROUNDS (default 3; SERVER_ROUNDS, its old name, is read too);
# SKIP_SERVER=1 runs the engine part only.
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

ROUNDS=${ROUNDS:-${SERVER_ROUNDS:-3}}
criterion_args=()
if [ "${SKIP_SERVER:-0}" != 1 ]; then
  : >"$OUT/server.tsv"
fi
for round in $(seq "$ROUNDS"); do
  if [ "$round" = 1 ]; then
    cargo bench --locked --features bench-peers --bench engine -- --noplot 2>&1 \
      | tee "$OUT/engine.txt"
    criterion_args+=(--criterion "$CRITERION_HOME")
  else
    CRITERION_HOME="$OUT/criterion-$round" cargo bench --locked --features bench-peers \
      --bench engine -- --noplot 'w2_get|w3_durable_put' 2>&1 | tee "$OUT/engine-$round.txt"
    criterion_args+=(--criterion "$OUT/criterion-$round")
  fi
  if [ "${SKIP_SERVER:-0}" != 1 ]; then
    RESULTS_TSV="$OUT/server-$round.tsv" benches/server.sh 2>&1 | tee "$OUT/server-$round.txt"
    cat "$OUT/server-$round.tsv" >>"$OUT/server.tsv"
  fi
done
put_ratio_args=()
if [ "${SKIP_SERVER:-0}" != 1 ]; then
  # The PUT target once more with caskade and Redis taken in turn: server.sh measures
  # them minutes apart, and this machine drifts more than the gap between them.
  benches/put-ratio.sh 2>&1 | tee "$OUT/put-ratio.txt"
  put_ratio_args=(--put-ratio "$OUT/put-ratio.txt")
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/run.txt"

python3 benches/targets.py "${criterion_args[@]}" --memory "$OUT/engine.txt" \
  --server "$OUT/server.tsv" "${put_ratio_args[@]}" | tee "$OUT/targets.md"
echo "raw outputs in $OUT" >&2
