#!/usr/bin/env bash
# caskade GET against the hyper hello-world, interleaved (issue 6's "GET >= 80 % of the
# hello-world" target). On a shared machine one long run per server measures the load of
# the moment more than the server; short slices taken in turn (hello, caskade, hello, ...
# the order rotating each round) see the same load, so the sums compare the servers.
#
# Prints per round and in total: requests of each server, caskade / hello-world, and the
# CPU time each server used per request (utime + stime from /proc, the 100 Hz ticks
# summed over all slices).
#
# Usage: benches/get-ratio.sh [CASKADE_BINARY]   (default target/release/caskade; the
# hello-world is built into target/hello as benches/server.sh does). Needs wrk, python3.
# Knobs: SLICE (wrk run per server and round, 2s), ROUNDS (12), KEYS (100000),
# VALUE_BYTES (100), CONNECTIONS (64), THREADS (2).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/benches/lib.sh"
CASKADE=${1:-$ROOT/target/release/caskade}
SLICE=${SLICE:-2s}
ROUNDS=${ROUNDS:-12}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
export KEYS=${KEYS:-100000}
export VALUE_BYTES=${VALUE_BYTES:-100}
export WRK_DIR="$ROOT/benches/wrk"

build_hello
bench_setup get-ratio

start_server hello "$HELLO" 127.0.0.1:0
HELLO_URL="http://$ADDR" HELLO_PID=$PID
start_server caskade "$CASKADE" serve --data-dir "$TMP/data" --listen 127.0.0.1:0 \
  --sync always --compaction off
CASKADE_URL="http://$ADDR" CASKADE_PID=$PID
python3 "$ROOT/benches/server-load.py" "$CASKADE_URL" "$KEYS" "$VALUE_BYTES" 1 >&2

# slice SCRIPT URL PID: prints "requests cpu_ticks" of one wrk run.
slice() {
  local before after requests
  before=$(proc_ticks "$3")
  requests=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$SLICE" -s "$WRK_DIR/$1" "$2" \
    | awk '/requests in/ {print $1}')
  after=$(proc_ticks "$3")
  echo "$requests $((after - before))"
}

hello_req=0 hello_cpu=0 caskade_req=0 caskade_cpu=0
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    read -r h hc < <(slice hello.lua "$HELLO_URL" "$HELLO_PID")
    read -r c cc < <(slice get.lua "$CASKADE_URL" "$CASKADE_PID")
  else
    read -r c cc < <(slice get.lua "$CASKADE_URL" "$CASKADE_PID")
    read -r h hc < <(slice hello.lua "$HELLO_URL" "$HELLO_PID")
  fi
  hello_req=$((hello_req + h)) hello_cpu=$((hello_cpu + hc))
  caskade_req=$((caskade_req + c)) caskade_cpu=$((caskade_cpu + cc))
  awk -v r="$round" -v h="$h" -v c="$c" \
    'BEGIN {printf "round %2d  hello-world %7d  caskade GET %7d  ratio %.2f\n", r, h, c, c / h}'
done
TICK=$(getconf CLK_TCK)
awk -v h="$hello_req" -v c="$caskade_req" -v hc="$hello_cpu" -v cc="$caskade_cpu" -v t="$TICK" \
  -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
    printf "total     hello-world %7d  caskade GET %7d  ratio %.3f  (load %s)\n", h, c, c / h, load
    printf "server CPU per request: hello-world %.1f us, caskade GET %.1f us\n",
      hc / t / h * 1e6, cc / t / c * 1e6 }'
