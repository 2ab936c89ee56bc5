#!/usr/bin/env bash
# Instructions and allocations per request of the server under one wrk workload, by
# callgrind: repeatable where times are not (this VM's speed drifts by ±10 % within
# minutes, and hardware counters are not available in it). Starts the release binary
# under `valgrind --tool=callgrind` (`--sync always --compaction off`, a temp data dir, a
# free loopback port), pre-loads KEYS keys through /v1/bulk, zeroes the counts
# (`callgrind_control -z`), runs wrk for DURATION, dumps the counts and divides them by
# wrk's request count. Every thread of the server is counted (the writer's share of a
# PUT too). Prints one line, then the heaviest functions per request (inclusive):
#
#   caskade put.lua requests=28646 instructions_per_req=36568 mallocs_per_req=27.2
#
# Usage: benches/server-callgrind.sh [SCRIPT (put.lua)] [DURATION (10s)]
# Knobs (environment): CASKADE (binary, default target/release/caskade; build it first
# with `cargo build --release --bin caskade`), CONNECTIONS (16: the server runs ~20x
# slower under callgrind), KEYS (100000), VALUE_BYTES (100), TOP (functions listed, 25),
# KEEP=1 (keep the callgrind output, for `callgrind_annotate`). Needs valgrind and wrk.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/benches/lib.sh"
SCRIPT=${1:-put.lua}
DURATION=${2:-10s}
CASKADE=${CASKADE:-$ROOT/target/release/caskade}
CONNECTIONS=${CONNECTIONS:-16}
TOP=${TOP:-25}
export KEYS=${KEYS:-100000} VALUE_BYTES=${VALUE_BYTES:-100} BULK=${BULK:-1000}
export WRK_DIR="$ROOT/benches/wrk"
for tool in valgrind callgrind_control callgrind_annotate wrk python3; do
  command -v $tool >/dev/null || { echo "server-callgrind.sh needs $tool" >&2; exit 1; }
done

bench_setup server-callgrind
start_server caskade valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.out" \
  "$CASKADE" serve --data-dir "$TMP/data" --listen "127.0.0.1:$(free_port)" \
  --sync always --compaction off
python3 "$ROOT/benches/server-load.py" "http://$ADDR" "$KEYS" "$VALUE_BYTES" 1 >&2
callgrind_control -z "$PID" >/dev/null 2>&1
wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --timeout 30s -s "$WRK_DIR/$SCRIPT" "http://$ADDR" \
  >"$TMP/wrk"
callgrind_control -d "$PID" >/dev/null 2>&1
# The dump taken after the run (callgrind numbers it `.1`).
OUT="$TMP/callgrind.out.1"
req=$(awk '/requests in/ {print $1}' "$TMP/wrk")
callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$OUT" >"$TMP/inclusive" 2>/dev/null
callgrind_annotate --auto=no --tree=caller --threshold=100 "$OUT" >"$TMP/callers" 2>/dev/null
total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' "$TMP/inclusive")
# Calls of glibc's malloc: the call counts of its callers' lines ("< caller (Nx)"), in
# the block that ends with malloc's own line.
mallocs=$(awk '
  /^$/ {n = 0; next}
  /\*  .*malloc\.c:malloc \[/ {for (i = 0; i < n; i++) s += calls[i]; done = 1; exit}
  / < / {c = $0; sub(/.*\(/, "", c); sub(/x\).*/, "", c); gsub(",", "", c); calls[n++] = c}
  END {print s + 0}' "$TMP/callers")
echo "$(basename "$CASKADE") $SCRIPT requests=$req" \
  "instructions_per_req=$(awk -v t="$total" -v r="$req" 'BEGIN {printf "%.0f", t / r}')" \
  "mallocs_per_req=$(awk -v m="$mallocs" -v r="$req" 'BEGIN {printf "%.1f", m / r}')" \
  "$(grep -E 'Non-2xx|Socket errors' "$TMP/wrk" | tr -s ' ' || true)"
echo "heaviest functions, instructions per request (inclusive):"
# (The runtime's task-polling frames, which hold everything, are left out.)
grep -E '^ *[0-9,]+ \(' "$TMP/inclusive" | grep -v 'PROGRAM TOTALS' |
  grep -E 'caskade|hyper|http|malloc|free' | grep -v 'tokio-[0-9.]*/src/runtime/' |
  head -n "$TOP" |
  awk -v r="$req" '{n = $1; gsub(",", "", n); sub(/^ *[0-9,]+ \( *[0-9.]+%\) +/, ""); printf "%9.0f  %s\n", n / r, $0}' |
  sed 's|/root/.cargo/registry/src/[^/]*/||; s|/rustc/[0-9a-f]*/library/||; s|'"$ROOT"'/||' |
  cut -c1-160
if [ "${KEEP:-0}" = 1 ]; then cp "$OUT" "${TMPDIR:-/tmp}/caskade-callgrind.out"; echo "kept: ${TMPDIR:-/tmp}/caskade-callgrind.out" >&2; fi
