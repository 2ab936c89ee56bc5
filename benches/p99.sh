#!/usr/bin/env bash
# p99 latency at fixed request rates (open loop), for issue 6's "p99 ≤ 2 ms at those
# rates": wrk at saturation (benches/server.sh) measures the tail of a machine whose two
# cores it fills, so this drives the servers at set rates with oha instead, correcting
# for coordinated omission (`--latency-correction`: a request's latency counts from when
# it should have been sent). For each rate: the hyper hello-world (the HTTP ceiling),
# caskade GET and caskade durable PUT (`--sync always`), 64 connections, random keys of
# a pre-loaded store (k0..k99999 of the entity "user", 100-byte values, as server.sh).
#
# Prints one line per run and a table at the end:
#
#   | rate (req/s) | hello-world GET p99 | caskade GET p99 | caskade PUT p99 |
#   | 10000 | 0.66 ms (10000/s) | 1.08 ms (10000/s) | 2.12 ms (9999/s) |
#
# (the rate in brackets is what oha achieved; below the asked rate, the server could
# not keep up and the p99 is queueing).
#
# Usage: benches/p99.sh [RATES ("10000 20000 30000")] [DURATION (8s)]
# Knobs (environment): CONNECTIONS (64), KEYS (100000), VALUE_BYTES (100).
# Needs oha (`cargo install oha`; 1.16 measured here), python3. Takes about
# 3 × DURATION per rate plus the builds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/benches/lib.sh"
RATES=${1:-"10000 20000 30000"}
DURATION=${2:-8s}
CONNECTIONS=${CONNECTIONS:-64}
KEYS=${KEYS:-100000}
VALUE_BYTES=${VALUE_BYTES:-100}
for tool in oha python3 cargo; do
  command -v $tool >/dev/null || { echo "p99.sh needs $tool (oha: cargo install oha)" >&2; exit 1; }
done

log() { echo "== $*" >&2; }

log "building caskade and the hello-world (release)"
cargo build --release --locked --manifest-path "$ROOT/Cargo.toml" --bin caskade >&2
build_hello
CASKADE="$ROOT/target/release/caskade"
bench_setup p99

start_server hello "$HELLO" 127.0.0.1:0
HELLO_ADDR=$ADDR
start_server caskade "$CASKADE" serve --data-dir "$TMP/data" --listen 127.0.0.1:0 \
  --sync always --compaction off
CASKADE_ADDR=$ADDR
python3 "$ROOT/benches/server-load.py" "http://$CASKADE_ADDR" "$KEYS" "$VALUE_BYTES" 1 >&2

VALUE=$(python3 -c "print('v' * $VALUE_BYTES)")
# oha draws each URL from a regex: k1..k99999 for the default KEYS (a power of ten; any
# other KEYS asks for keys that do not exist, counted as failed). The regex picks the
# number of digits uniformly, so short keys are asked for more often than long ones.
KEY_REGEX="k[1-9][0-9]{0,$(( ${#KEYS} - 2 ))}"

# run NAME RATE URL_REGEX [oha options...]: one oha run; appends "NAME RATE p99_ms rps".
run() {
  local name=$1 rate=$2 url=$3; shift 3
  log "$name at $rate req/s ($DURATION, $CONNECTIONS connections)"
  oha -z "$DURATION" -c "$CONNECTIONS" -q "$rate" --latency-correction --no-tui \
    --output-format json --rand-regex-url "$@" "$url" >"$TMP/oha.json"
  python3 - "$name" "$rate" "$TMP/oha.json" >>"$TMP/results" <<'PY'
import json, sys
name, rate, path = sys.argv[1:4]
report = json.load(open(path))
p99 = report["latencyPercentiles"]["p99"]
rps = report["summary"]["requestsPerSec"]
codes = report.get("statusCodeDistribution", {})
bad = sum(n for code, n in codes.items() if not code.startswith("2"))
# Requests still in flight when the run's time is up are not failures.
errors = sum(n for e, n in report.get("errorDistribution", {}).items()
             if e != "aborted due to deadline")
if bad or errors:
    print(f"{name} at {rate}/s: status codes {codes}, errors {report.get('errorDistribution')}",
          file=sys.stderr)
print(f"{name}\t{rate}\t{p99 * 1000:.2f}\t{rps:.0f}\t{bad + errors}")
PY
  tail -1 "$TMP/results" >&2
}

: >"$TMP/results"
for rate in $RATES; do
  run hello_get "$rate" "http://$HELLO_ADDR/v1/kv/user/$KEY_REGEX"
  run caskade_get "$rate" "http://$CASKADE_ADDR/v1/kv/user/$KEY_REGEX"
  run caskade_put "$rate" "http://$CASKADE_ADDR/v1/kv/user/$KEY_REGEX" -m PUT \
    -H 'Content-Type: application/json' -d "{\"value\":\"$VALUE\"}"
done

python3 - "$TMP/results" "$RATES" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, rate, p99, rps, bad = line.rstrip("\n").split("\t")
    cell = f"{p99} ms ({rps}/s)" + (f", {bad} failed" if bad != "0" else "")
    rows.setdefault(rate, {})[name] = cell
print("| rate (req/s) | hello-world GET p99 | caskade GET p99 | caskade PUT p99 |")
print("|---:|---:|---:|---:|")
for rate in sys.argv[2].split():
    r = rows.get(rate, {})
    print(f"| {rate} | " + " | ".join(r.get(n, "–") for n in ("hello_get", "caskade_get", "caskade_put")) + " |")
PY
