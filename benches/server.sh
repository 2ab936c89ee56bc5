#!/usr/bin/env bash
# The server end to end (issue 6, part 2; issue 4's compaction cost), in one run:
#
#   - caskade's release binary, `--sync always`, over loopback, loaded by wrk (64 keep-alive
#     connections, 2 threads, 100-byte values, random keys of a fixed key space):
#     GET, envelope PUT, 90/10 GET/PUT, bulk PUT of 1000 keys per request;
#   - the references: a hyper hello-world (benches/hello, the HTTP ceiling) under the same
#     wrk GET settings, and Debian's redis-server (appendonly yes, appendfsync always)
#     under redis-benchmark -c 64 -d 100 (SET and GET);
#   - caskade GET idle and while `POST /v1/admin/compact` runs at the default rate limit;
#
# then prints a table with requests/s, p50, p99 and each caskade figure as a ratio to its
# reference. About 3-4 minutes. Usage: benches/server.sh (as root, or with sudo for apt).
#
# Knobs (environment): DURATION (per wrk run, default 12s), CONNECTIONS (64), THREADS (2),
# KEYS (100000), VALUE_BYTES (100), REDIS_N (requests per redis-benchmark test, 200000),
# GARBAGE_MB (disk to compact, default 900: ~14 s at 64 MiB/s), COMPACT_SEGMENT_BYTES
# (8 MiB), PERF=1 (also `perf record` the server under GET load and print the top symbols),
# KEEP=1 (keep the temp dir with every raw output), RESULTS_TSV=<file> (also copy the raw
# results, one tab-separated line per run: name, requests/s, keys/s, p50 ms, p99 ms, errors;
# benches/targets.sh reads it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/benches/lib.sh"
DURATION=${DURATION:-12s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
export KEYS=${KEYS:-100000}
export VALUE_BYTES=${VALUE_BYTES:-100}
REDIS_N=${REDIS_N:-200000}
GARBAGE_MB=${GARBAGE_MB:-900}
COMPACT_SEGMENT_BYTES=${COMPACT_SEGMENT_BYTES:-8388608}
export WRK_DIR="$ROOT/benches/wrk"

log() { printf '\n== %s\n' "$*" >&2; }

# --- 1. what the run needs -------------------------------------------------------------
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-benchmark >/dev/null || missing+=(redis-tools)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
for tool in python3 curl cargo; do
  command -v $tool >/dev/null || { echo "server.sh needs $tool" >&2; exit 1; }
done

log "building caskade and the hello-world (release)"
(cd "$ROOT" && cargo build --release --locked --bin caskade)
build_hello
CASKADE="$ROOT/target/release/caskade"

bench_setup server-bench
RESULTS="$TMP/results.tsv"
: >"$RESULTS"

# wrk's latency to milliseconds ("812.00us", "1.20ms", "1.01s").
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "%s", v }'
}

# run_wrk NAME SCRIPT URL [KEYS_PER_REQUEST]: one wrk run; appends
# "NAME  req/s  keys/s  p50_ms  p99_ms  errors" to the results.
run_wrk() {
  local name=$1 script=$2 url=$3 per=${4:-1} out="$TMP/wrk-$1.txt"
  log "wrk $name ($DURATION, $CONNECTIONS connections, $THREADS threads)"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 10s --latency -s "$WRK_DIR/$script" "$url" \
    | tee "$out" >&2
  local rps p50 p99 errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
  errors=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
  local sock
  sock=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")
  errors=$((${errors:-0} + ${sock:-0}))
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" \
    "$(awk -v r="$rps" -v p="$per" 'BEGIN {printf "%.0f", r * p}')" "$p50" "$p99" "$errors" \
    >>"$RESULTS"
}

result() { awk -F'\t' -v n="$1" -v c="$2" '$1 == n {print $c}' "$RESULTS"; }

# --- 2. the HTTP ceiling: hello-world ---------------------------------------------------
start_server hello "$HELLO" 127.0.0.1:0
run_wrk hello_get hello.lua "http://$ADDR"
stop_server "$PID"

# --- 3. caskade, --sync always ----------------------------------------------------------
start_server caskade "$CASKADE" serve --data-dir "$TMP/data" --listen 127.0.0.1:0 \
  --sync always --compaction off
URL="http://$ADDR"
log "pre-loading $KEYS keys of $VALUE_BYTES bytes"
python3 "$ROOT/benches/server-load.py" "$URL" "$KEYS" "$VALUE_BYTES" 1 >&2
curl -fsS "$URL/v1/kv/user/k0" >/dev/null
run_wrk caskade_get get.lua "$URL"
if [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then
  log "perf record of the server under GET load"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d10s -s "$WRK_DIR/get.lua" "$URL" >/dev/null &
  WRK_PID=$!
  sleep 1
  perf record -F 999 -g -p "$PID" -o "$TMP/perf.data" -- sleep 7 2>/dev/null >&2
  wait "$WRK_PID"
  { perf report -i "$TMP/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null \
      | grep -E '^ +[0-9]' | head -8
    perf report -i "$TMP/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null \
      | grep -E '^ +[0-9]' | head -30; } >&2 || true
fi
run_wrk caskade_put put.lua "$URL"
run_wrk caskade_mix mix.lua "$URL"
run_wrk caskade_bulk bulk.lua "$URL" 1000
stop_server "$PID"

# --- 4. Redis, appendfsync always ------------------------------------------------------
start_redis
log "redis-benchmark -c $CONNECTIONS -d $VALUE_BYTES -t set,get -n $REDIS_N -r $KEYS --threads $THREADS"
redis-benchmark -p "$REDIS_PORT" -c "$CONNECTIONS" -d "$VALUE_BYTES" -t set,get -n "$REDIS_N" \
  -r "$KEYS" --threads "$THREADS" --csv | tee "$TMP/redis.csv" >&2
# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
tr -d '"' <"$TMP/redis.csv" | awk -F, '$1 == "SET" || $1 == "GET" {
  printf "redis_%s\t%s\t%.0f\t%s\t%s\t0\n", tolower($1), $2, $2, $5, $7 }' >>"$RESULTS"
redis-cli -p "$REDIS_PORT" config get appendfsync | tr '\n' ' ' >&2; echo >&2
stop_server "$REDIS_PID"

# --- 5. caskade GET idle vs during a compaction at the default rate -------------------
# A fresh store with small segments and background compaction off; garbage is made by
# overwriting the key space with 1000-byte values until about GARBAGE_MB are on disk,
# then the key space is written once more with VALUE_BYTES values (what the GETs read).
start_server compact "$CASKADE" serve --data-dir "$TMP/compact" --listen 127.0.0.1:0 \
  --sync always --compaction off --segment-bytes "$COMPACT_SEGMENT_BYTES"
URL="http://$ADDR"
PASSES=$(((GARBAGE_MB * 1000000 + KEYS * 1100 - 1) / (KEYS * 1100)))
log "making garbage: $PASSES passes over $KEYS keys with 1000-byte values, then one of $VALUE_BYTES bytes"
python3 "$ROOT/benches/server-load.py" "$URL" "$KEYS" 1000 "$PASSES" >&2
python3 "$ROOT/benches/server-load.py" "$URL" "$KEYS" "$VALUE_BYTES" 1 >&2
DISK_BEFORE=$(du -sm "$TMP/compact" | cut -f1)
stats() { curl -fsS "$URL/v1/admin/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['data']['$1'])"; }
log "on disk before compaction: ${DISK_BEFORE} MB; compactions so far: $(stats compactions)"
run_wrk get_idle get.lua "$URL"
COMPACTIONS=$(stats compactions)
code=$(curl -sS -o "$TMP/compact.json" -w '%{http_code}' -X POST "$URL/v1/admin/compact")
[ "$code" = 202 ] || { echo "compact answered $code: $(cat "$TMP/compact.json")" >&2; exit 1; }
T0=$(date +%s.%N)
run_wrk get_compacting get.lua "$URL"
T1=$(date +%s.%N)
if [ "$(stats compactions)" != "$COMPACTIONS" ]; then
  COMPACT_NOTE="compaction had finished when the wrk run ended: it overlapped part of the run"
else
  COMPACT_NOTE="compaction was still running when the wrk run ended ($(awk -v a="$T0" -v b="$T1" 'BEGIN {printf "%.1f", b - a}') s)"
fi
while [ "$(stats compactions)" = "$COMPACTIONS" ]; do sleep 0.2; done
T2=$(date +%s.%N)
COMPACT_SECS=$(awk -v a="$T0" -v b="$T2" 'BEGIN {printf "%.1f", b - a}')
DISK_AFTER=$(du -sm "$TMP/compact" | cut -f1)
stop_server "$PID"

# --- the table ------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "–" }'; }
row() { # name label reference-name reference-label
  local n=$1 label=$2 ref=${3:-} reflabel=${4:-}
  local rps keys p50 p99 err r
  rps=$(result "$n" 2); keys=$(result "$n" 3); p50=$(result "$n" 4); p99=$(result "$n" 5)
  err=$(result "$n" 6)
  if [ -n "$ref" ]; then r="$(ratio "$rps" "$(result "$ref" 2)") of $reflabel"; else r="(reference)"; fi
  if [ "$n" = get_compacting ]; then r="$r; p99 $(ratio "$p99" "$(result get_idle 5)")"; fi
  [ "${err:-0}" = 0 ] || r="$r; $err errors, timeouts or non-2xx"
  printf '| %s | %.0f | %.0f | %s | %s | %s |\n' "$label" "$rps" "$keys" "$p50" "$p99" "$r"
}
echo
echo "caskade $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $KEYS keys, $VALUE_BYTES-byte values, --sync always"
echo
echo "| workload | requests/s | keys/s | p50 ms | p99 ms | ratio |"
echo "|---|---:|---:|---:|---:|---|"
row hello_get "hello-world GET (hyper)"
row redis_get "Redis GET"
row redis_set "Redis SET (appendfsync always)"
row caskade_get "caskade GET" hello_get "hello-world"
echo "| caskade GET vs Redis | | | | | $(ratio "$(result caskade_get 2)" "$(result redis_get 2)") of Redis GET |"
row caskade_put "caskade PUT (envelope, durable)" redis_set "Redis SET"
row caskade_mix "caskade 90/10 GET/PUT" hello_get "hello-world"
row caskade_bulk "caskade bulk PUT (1000 keys/request)"
echo "| caskade bulk vs target | | | | | $(ratio "$(result caskade_bulk 3)" 500000) of 500 k keys/s |"
row get_idle "caskade GET, idle (small segments)"
row get_compacting "caskade GET during compaction (64 MiB/s)" get_idle "idle"
[ -z "${RESULTS_TSV:-}" ] || cp "$RESULTS" "$RESULTS_TSV"
echo
echo "compaction: ${DISK_BEFORE} MB on disk before, ${DISK_AFTER} MB after, took ${COMPACT_SECS} s from the 202; $COMPACT_NOTE"
