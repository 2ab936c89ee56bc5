#!/usr/bin/env bash
# Redis's CPU per request, for benches/server-cpu.sh's figures to be set against:
# starts Debian's redis-server as benches/server.sh does (`start_redis` in lib.sh:
# `appendonly yes`, `appendfsync always`, no snapshots, a free loopback port), loads
# it with `redis-benchmark -c CONNECTIONS -d VALUE_BYTES -r KEYS --threads THREADS`
# for one test, and divides the server's CPU time (/proc/PID/stat, around the run) and
# redis-benchmark's by the number of requests. Prints one line:
#
#   redis SET n=300000 rps=54466.23 p50=0.879ms p99=1.855ms cpu_per_req_us=12.9 client_us=13.9 load=1.52
#
# Usage: benches/redis-cpu.sh [TEST (set)] [REQUESTS (300000)]
# Knobs (environment): CONNECTIONS (64), THREADS (2), KEYS (100000), VALUE_BYTES (100).
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/benches/lib.sh"
TEST=${1:-set}
REQUESTS=${2:-300000}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
KEYS=${KEYS:-100000}
VALUE_BYTES=${VALUE_BYTES:-100}
for tool in redis-server redis-benchmark redis-cli python3; do
  command -v $tool >/dev/null || { echo "redis-cpu.sh needs $tool" >&2; exit 1; }
done

bench_setup redis-cpu
start_redis

before=$(proc_ticks "$REDIS_PID")
TIMEFORMAT='%U %S'
{ time redis-benchmark -p "$REDIS_PORT" -c "$CONNECTIONS" -d "$VALUE_BYTES" -t "$TEST" \
  -n "$REQUESTS" -r "$KEYS" --threads "$THREADS" --csv >"$TMP/csv" 2>"$TMP/err"; } 2>"$TMP/time"
after=$(proc_ticks "$REDIS_PID")
hz=$(getconf CLK_TCK)
name=$(echo "$TEST" | tr '[:lower:]' '[:upper:]')
# CSV: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
line=$(tr -d '"' <"$TMP/csv" | awk -F, -v t="$name" '$1 == t {printf "rps=%s p50=%sms p99=%sms", $2, $5, $7}')
if [ -z "$line" ]; then
  echo "redis-benchmark printed no $name line:" >&2; cat "$TMP/csv" "$TMP/err" >&2; exit 1
fi
echo "redis $name n=$REQUESTS $line" \
  "cpu_per_req_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$REQUESTS" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')" \
  "client_us=$(awk -v n="$REQUESTS" '{printf "%.1f", ($1 + $2) * 1e6 / n}' "$TMP/time")" \
  "load=$(cut -d' ' -f1 /proc/loadavg)"
