#!/usr/bin/env bash
# Two builds of the server under the same wrk workload, taken in turn: each round
# loads one and then the other (the order swapped every round) for SLICE each, and
# counts requests and each server's user and system CPU time (utime and stime from
# /proc, the 100 Hz ticks summed over the rounds). On this shared machine the rate of
# one build moves ±10 % between minutes; taken in turn, both see the same minutes, and
# the CPU per request, split into user (caskade's code, hyper, tokio) and system (the
# socket calls), says where a change landed.
#
#   benches/ab-cpu.sh /tmp/caskade-before /tmp/caskade-after get.lua
#
# Prints one line per round and the totals:
#
#   total  A 2410817 req  user 7.27 us  sys 6.11 us | B 2639615 req  user 6.22 us  sys 5.65 us | B/A requests 1.095
#
# Usage: benches/ab-cpu.sh BINARY_A BINARY_B [SCRIPT (get.lua)]
# Knobs (environment): ROUNDS (8), SLICE (wrk run per build and round, 5s),
# CONNECTIONS (64), THREADS (2), KEYS (100000), VALUE_BYTES (100). Each server runs
# `serve --sync always --compaction off` on a temp store pre-loaded with KEYS keys.
# Needs wrk and python3.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/benches/lib.sh"
[ $# -ge 2 ] || { sed -n '2,20p' "$0" >&2; exit 2; }
A=$1 B=$2 SCRIPT=${3:-get.lua}
ROUNDS=${ROUNDS:-8}
SLICE=${SLICE:-5s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
export KEYS=${KEYS:-100000} VALUE_BYTES=${VALUE_BYTES:-100} BULK=${BULK:-1000}
export WRK_DIR="$ROOT/benches/wrk"
for tool in wrk python3; do
  command -v $tool >/dev/null || { echo "ab-cpu.sh needs $tool" >&2; exit 1; }
done

bench_setup ab-cpu
for side in A B; do
  binary=${!side}
  mkdir -p "$TMP/$side"
  start_server "$side" "$binary" serve --data-dir "$TMP/$side/data" --listen 127.0.0.1:0 \
    --sync always --compaction off
  python3 "$ROOT/benches/server-load.py" "http://$ADDR" "$KEYS" "$VALUE_BYTES" 1 >&2
  declare "${side}_URL=http://$ADDR" "${side}_PID=$PID"
done

# cpu_ticks PID: "user system" clock ticks process PID has used.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

# slice SIDE: prints "requests user_ticks system_ticks" of one wrk run against SIDE.
slice() {
  local url pid u0 s0 u1 s1 requests
  url=${1}_URL pid=${1}_PID
  read -r u0 s0 < <(cpu_ticks "${!pid}")
  requests=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$SLICE" --timeout 10s \
    -s "$WRK_DIR/$SCRIPT" "${!url}" | awk '/requests in/ {print $1}')
  read -r u1 s1 < <(cpu_ticks "${!pid}")
  echo "$requests $((u1 - u0)) $((s1 - s0))"
}

TICK=$(getconf CLK_TCK)
declare -A req=([A]=0 [B]=0) user=([A]=0 [B]=0) sys=([A]=0 [B]=0)
for round in $(seq "$ROUNDS"); do
  order="A B"
  [ $((round % 2)) = 0 ] && order="B A"
  line="round $round"
  for side in $order; do
    read -r r u s < <(slice "$side")
    req[$side]=$((req[$side] + r)) user[$side]=$((user[$side] + u)) sys[$side]=$((sys[$side] + s))
    line="$line  $side $r"
  done
  echo "$line"
done
awk -v ra="${req[A]}" -v ua="${user[A]}" -v sa="${sys[A]}" \
  -v rb="${req[B]}" -v ub="${user[B]}" -v sb="${sys[B]}" -v t="$TICK" 'BEGIN {
    printf "total  A %d req  user %.2f us  sys %.2f us | B %d req  user %.2f us  sys %.2f us | B/A requests %.3f\n",
      ra, ua / t / ra * 1e6, sa / t / ra * 1e6, rb, ub / t / rb * 1e6, sb / t / rb * 1e6, rb / ra }'
