#!/usr/bin/env bash
# Server CPU per request under one wrk workload: starts the release binary (`--sync
# always --compaction off`, a temp data dir, a free loopback port), pre-loads KEYS keys
# of VALUE_BYTES bytes through /v1/bulk, counts the server's CPU time with `perf stat -e
# task-clock -p PID` around one wrk run and divides it by wrk's request count. Steadier
# than requests/s on a shared machine: it does not depend on how much of the CPU the
# server got. Also splits the server's CPU per request by thread (the writer, the
# runtime's threads; from /proc/PID/task/*/schedstat around the wrk run) and gives
# wrk's own CPU per request (it shares the cores). Prints one line:
#
#   caskade put.lua req=354880 rps=59128.03 keys/s=59128 p50=0.99ms p99=2.33ms cpu_ms=6049.78 cpu_per_req_ms=0.02 cpu_per_req_us=17.0 writer_us=4.9 runtime_us=11.9 wrk_us=11.3 load=0.91
#
# (benches/redis-cpu.sh measures Redis SET the same way.)
#
# Usage: benches/server-cpu.sh [SCRIPT (bulk.lua)] [DURATION (8s)]
# Knobs (environment): CASKADE (binary, default target/release/caskade; build it first
# with `cargo build --release --bin caskade`), CONNECTIONS (64), THREADS (2), KEYS
# (100000), VALUE_BYTES (100), BULK (keys per bulk request, 1000; keys/s = rps × BULK).
# Needs wrk and perf.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/benches/lib.sh"
SCRIPT=${1:-bulk.lua}
DURATION=${2:-8s}
CASKADE=${CASKADE:-$ROOT/target/release/caskade}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
export KEYS=${KEYS:-100000} VALUE_BYTES=${VALUE_BYTES:-100} BULK=${BULK:-1000}
export WRK_DIR="$ROOT/benches/wrk"
for tool in wrk perf python3; do
  command -v $tool >/dev/null || { echo "server-cpu.sh needs $tool" >&2; exit 1; }
done

bench_setup server-cpu
start_server caskade "$CASKADE" serve --data-dir "$TMP/data" --listen 127.0.0.1:0 \
  --sync always --compaction off
python3 "$ROOT/benches/server-load.py" "http://$ADDR" "$KEYS" "$VALUE_BYTES" 1 >&2

SECS=${DURATION%s}
perf stat -e task-clock -p "$PID" -o "$TMP/stat" -- sleep $((SECS + 1)) &
STAT=$!
thread_cpu "$PID" >"$TMP/threads.before"
TIMEFORMAT='%U %S'
{ time wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 10s --latency \
  -s "$WRK_DIR/$SCRIPT" "http://$ADDR" >"$TMP/wrk" 2>"$TMP/wrk.err"; } 2>"$TMP/wrk.time"
thread_cpu "$PID" >"$TMP/threads.after"
cat "$TMP/wrk.err" >&2
wait "$STAT"
req=$(awk '/requests in/ {print $1}' "$TMP/wrk")
rps=$(awk '/^Requests\/sec:/ {print $2}' "$TMP/wrk")
cpu_ms=$(awk '/task-clock/ {gsub(",", "", $1); print $1}' "$TMP/stat")
per=1
[ "$SCRIPT" = bulk.lua ] && per=$BULK
echo "$(basename "$CASKADE") $SCRIPT req=$req rps=$rps" \
  "keys/s=$(awk -v r="$rps" -v p="$per" 'BEGIN {printf "%.0f", r * p}')" \
  "p50=$(awk '$1 == "50%" {print $2}' "$TMP/wrk") p99=$(awk '$1 == "99%" {print $2}' "$TMP/wrk")" \
  "cpu_ms=$cpu_ms cpu_per_req_ms=$(awk -v m="$cpu_ms" -v r="$req" 'BEGIN {printf "%.2f", m / r}')" \
  "cpu_per_req_us=$(awk -v m="$cpu_ms" -v r="$req" 'BEGIN {printf "%.1f", m * 1000 / r}')" \
  "$(join "$TMP/threads.before" "$TMP/threads.after" | awk -v r="$req" '
      {us = ($3 - $2) / 1000 / r}
      $1 == "caskade-writer" {w += us} $1 == "tokio-rt-worker" {t += us}
      END {printf "writer_us=%.1f runtime_us=%.1f", w, t}')" \
  "wrk_us=$(awk -v r="$req" '{printf "%.1f", ($1 + $2) * 1e6 / r}' "$TMP/wrk.time")" \
  "load=$(cut -d' ' -f1 /proc/loadavg)" \
  "$(grep -E 'Non-2xx|Socket errors' "$TMP/wrk" | tr -s ' ' || true)"
