#!/usr/bin/env bash
# Regenerates the checked-in seed corpora under fuzz/corpus/<target>/seed-*.
#
# record_decode: real files written by the engine. The real `caskade` binary serves a
# store with 4 KiB segments, takes some writes (puts with ttl and metadata, deletes, a
# bulk) until segments seal and the maintenance thread writes their hints; then its
# segment header, records and hints are cut out, each behind the target's mode byte
# (0 plain, 1 fix the record CRC, 2 fix the hint CRCs, 3 fix the segment header CRC).
#
# The other targets read `arbitrary`-structured inputs that are impractical to write by
# hand: each runs for a short while from nothing, the corpus is minimised, and the few
# largest inputs (the most structure) are kept.
#
# Run from anywhere: fuzz/make-seeds.sh [target...]   (default: all four; needs
# cargo-fuzz, nightly, curl and python3)
set -euo pipefail
cd "$(dirname "$0")"
fuzz=$(pwd)
root=$(cd .. && pwd)
keep=${SEEDS_PER_TARGET:-6}
seconds=${SEED_FUZZ_SECONDS:-20}
targets=${*:-record_decode recover_dir engine_ops request_validation}
wanted() { [[ " $targets " == *" $1 "* ]]; }

# --- record_decode from a real store ---------------------------------------------
if wanted record_decode; then
(cd "$root" && cargo build --locked --bin caskade)
data=$(mktemp -d)
log=$(mktemp)
"$root/target/debug/caskade" serve --data-dir "$data/store" --listen 127.0.0.1:0 \
  --segment-bytes 4096 --sync never --sweep-interval 100ms >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$data" "$log"' EXIT
url=""
for _ in $(seq 1 300); do
  url=$(sed -n 's/^caskade listening on \(http:\/\/[^ ]*\).*/\1/p' "$log" | head -n 1)
  [[ -n $url ]] && curl -fsS "$url/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
[[ -n $url ]] || { cat "$log"; exit 1; }
for i in $(seq 1 40); do
  curl -fsS -X PUT "$url/v1/kv/user/u$i" -H 'content-type: application/json' \
    -d "{\"value\":{\"n\":$i,\"name\":\"user number $i\"},\"ttl\":3600,\"metadata\":{\"i\":$i}}" >/dev/null
  curl -fsS -X PUT "$url/v1/kv/event/e$i" -H 'content-type: application/octet-stream' \
    --data-binary "raw bytes of event $i" >/dev/null
done
for i in $(seq 1 10); do curl -fsS -X DELETE "$url/v1/kv/user/u$i" >/dev/null; done
curl -fsS -X POST "$url/v1/bulk" -H 'content-type: application/json' \
  -d '{"operations":[{"op":"put","entity":"user","key":"b1","value":"text"},{"op":"delete","entity":"event","key":"e1"}]}' >/dev/null
for _ in $(seq 1 100); do
  compgen -G "$data/store/*.hint" >/dev/null && break
  sleep 0.1
done
kill -TERM "$server"
wait "$server" || true
python3 - "$data/store" "$fuzz/corpus/record_decode" <<'PY'
import hashlib, os, struct, sys
store, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
seeds = []
segs = sorted(f for f in os.listdir(store) if f.endswith(".seg"))
hints = sorted(f for f in os.listdir(store) if f.endswith(".hint"))
assert segs and hints, (segs, hints)
seg = open(os.path.join(store, segs[0]), "rb").read()
seeds.append(b"\x03" + seg[:32])
pos, records = 32, []
while pos + 44 <= len(seg):
    klen, mlen, vlen = struct.unpack_from("<III", seg, pos + 32)
    end = pos + 44 + klen + mlen + vlen
    records.append(seg[pos:end])
    pos = end
# A put with ttl and metadata, a tombstone, and the last record of the file.
seeds.append(b"\x00" + records[0])
seeds.append(b"\x01" + records[-1])
tombstones = [r for r in records if r[5] & 1]
if tombstones:
    seeds.append(b"\x00" + tombstones[0])
hint = open(os.path.join(store, hints[0]), "rb").read()
seeds.append(b"\x00" + hint)
seeds.append(b"\x02" + hint[:32 + 3 * 60])
for s in seeds:
    name = "seed-" + hashlib.sha1(s).hexdigest()[:16]
    open(os.path.join(out, name), "wb").write(s)
print(f"record_decode: {len(seeds)} seeds")
PY
fi

# --- the structured targets from a short run ---------------------------------------
for target in recover_dir engine_ops request_validation; do
  wanted "$target" || continue
  work=$(mktemp -d)
  # len_control=0: long inputs from the start, so the kept seeds carry some structure.
  cargo +nightly fuzz run -a "$target" "$work" -- -max_total_time="$seconds" -len_control=0 >/dev/null 2>&1
  cargo +nightly fuzz cmin -a "$target" "$work" >/dev/null 2>&1 || true
  mkdir -p "corpus/$target"
  mapfile -t largest < <(ls -S "$work")
  for f in "${largest[@]:0:$keep}"; do
    cp "$work/$f" "corpus/$target/seed-$f"
  done
  echo "$target: $(ls "corpus/$target" | wc -l) seeds"
  rm -rf "$work"
done
