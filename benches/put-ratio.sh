#!/usr/bin/env bash
# caskade's durable PUT against Redis SET with `appendfsync always`, interleaved (issue
# 6's "HTTP durable PUT >= Redis SET" target). benches/server.sh measures the two a few
# minutes apart, and this machine's speed drifts by ±10 % within minutes; short slices
# taken in turn (caskade, Redis, Redis, caskade, ... the order swapped each round) see
# the same machine, so their ratios compare the servers. Each load tool as
# benches/server.sh runs it: wrk with put.lua (64 connections, 2 threads, random keys
# of KEYS) for caskade (`--sync always`), redis-benchmark -t set (64 connections, 2
# threads, -r KEYS, VALUE_BYTES-byte values) for Debian's redis-server (`appendonly
# yes`, `appendfsync always`).
#
# Prints per round the two rates and caskade / Redis, then the median of the rounds'
# ratios and the ratio of the totals, and the CPU time each server used per request
# (utime + stime from /proc, summed over the slices).
#
# Usage: benches/put-ratio.sh [CASKADE_BINARY]   (default target/release/caskade).
# Knobs: SLICE (seconds of wrk per caskade slice, 3), REDIS_SLICE_N (SETs per Redis
# slice, 150000: about as long), ROUNDS (10), KEYS (100000), VALUE_BYTES (100),
# CONNECTIONS (64), THREADS (2). Needs wrk, redis-server, redis-benchmark, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/benches/lib.sh"
CASKADE=${1:-$ROOT/target/release/caskade}
SLICE=${SLICE:-3}
REDIS_SLICE_N=${REDIS_SLICE_N:-150000}
ROUNDS=${ROUNDS:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
export KEYS=${KEYS:-100000}
export VALUE_BYTES=${VALUE_BYTES:-100}
export WRK_DIR="$ROOT/benches/wrk"
for tool in wrk redis-server redis-benchmark redis-cli python3; do
  command -v $tool >/dev/null || { echo "put-ratio.sh needs $tool" >&2; exit 1; }
done

bench_setup put-ratio
start_server caskade "$CASKADE" serve --data-dir "$TMP/data" --listen 127.0.0.1:0 \
  --sync always --compaction off
CASKADE_URL="http://$ADDR" CASKADE_PID=$PID
python3 "$ROOT/benches/server-load.py" "$CASKADE_URL" "$KEYS" "$VALUE_BYTES" 1 >&2
start_redis

# Each slice prints "requests requests_per_second cpu_ticks".
caskade_slice() {
  local before after
  before=$(proc_ticks "$CASKADE_PID")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SLICE}s" --timeout 10s -s "$WRK_DIR/put.lua" \
    "$CASKADE_URL" >"$TMP/wrk"
  after=$(proc_ticks "$CASKADE_PID")
  if grep -qE 'Non-2xx|Socket errors' "$TMP/wrk"; then
    echo "caskade answered with errors:" >&2; cat "$TMP/wrk" >&2; exit 1
  fi
  echo "$(awk '/requests in/ {print $1}' "$TMP/wrk")" \
    "$(awk '/^Requests\/sec:/ {print $2}' "$TMP/wrk")" "$((after - before))"
}
redis_slice() {
  local before after
  before=$(proc_ticks "$REDIS_PID")
  redis-benchmark -p "$REDIS_PORT" -c "$CONNECTIONS" -d "$VALUE_BYTES" -t set \
    -n "$REDIS_SLICE_N" -r "$KEYS" --threads "$THREADS" --csv >"$TMP/redis.csv" 2>"$TMP/redis.err"
  after=$(proc_ticks "$REDIS_PID")
  # CSV: "test","rps",...; the SET line.
  echo "$REDIS_SLICE_N" "$(awk -F'"' '$2 == "SET" {print $4}' "$TMP/redis.csv")" \
    "$((after - before))"
}

ratios=()
caskade_req=0 caskade_cpu=0 caskade_secs=0 redis_req=0 redis_cpu=0 redis_secs=0
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    read -r c crate cc < <(caskade_slice)
    read -r r rrate rc < <(redis_slice)
  else
    read -r r rrate rc < <(redis_slice)
    read -r c crate cc < <(caskade_slice)
  fi
  ratio=$(awk -v c="$crate" -v r="$rrate" 'BEGIN {printf "%.3f", c / r}')
  ratios+=("$ratio")
  caskade_req=$((caskade_req + c)) caskade_cpu=$((caskade_cpu + cc))
  redis_req=$((redis_req + r)) redis_cpu=$((redis_cpu + rc))
  caskade_secs=$(awk -v s="$caskade_secs" -v n="$c" -v x="$crate" 'BEGIN {print s + n / x}')
  redis_secs=$(awk -v s="$redis_secs" -v n="$r" -v x="$rrate" 'BEGIN {print s + n / x}')
  printf "round %2d  caskade PUT %9.0f/s  Redis SET %9.0f/s  ratio %s\n" \
    "$round" "$crate" "$rrate" "$ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n |
  awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
below=$(printf '%s\n' "${ratios[@]}" | awk '$1 < 1 {n++} END {print n + 0}')
TICK=$(getconf CLK_TCK)
awk -v cr="$caskade_req" -v cs="$caskade_secs" -v rr="$redis_req" -v rs="$redis_secs" \
  -v cc="$caskade_cpu" -v rc="$redis_cpu" -v t="$TICK" -v m="$median" -v b="$below" \
  -v n="$ROUNDS" -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
    printf "median of the rounds %.3f (%d of %d rounds under 1)  totals: caskade %.0f/s, Redis %.0f/s, ratio %.3f  (load %s)\n",
      m, b, n, cr / cs, rr / rs, (cr / cs) / (rr / rs), load
    printf "server CPU per request: caskade PUT %.1f us, Redis SET %.1f us\n",
      cc / t / cr * 1e6, rc / t / rr * 1e6 }'
