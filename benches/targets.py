#!/usr/bin/env python3
"""Issue 6's targets table from one run's raw results (benches/targets.sh runs it).

Reads criterion's estimates (target/criterion/<group>/<bench>/new/; of several runs, each
benchmark's median), the memory table the
engine benchmark prints, and the raw results of benches/server.sh (RESULTS_TSV), and
prints one Markdown row per target: what was measured, the ratio, whether it holds.
Every ratio is between two figures of the same run. A figure that is missing (a group
not run, a tool not installed) shows as "not measured" rather than failing the table.
"""

import argparse
import json
import re
import statistics
import sys
from pathlib import Path


def criterion_rates(roots: list) -> dict:
    """full_id -> (elements per second, seconds per iteration) for every benchmark of
    the criterion folders `roots` (one per engine run of benches/targets.sh). A
    benchmark measured in several runs gets the median of its rates."""
    runs = {}
    for root in roots:
        for bench in root.glob("*/*/new/benchmark.json"):
            meta = json.loads(bench.read_text())
            estimates = json.loads((bench.parent / "estimates.json").read_text())
            # criterion's headline: the slope where it has one, else the mean.
            headline = estimates.get("slope") or estimates["mean"]
            seconds = headline["point_estimate"] / 1e9
            elements = (meta.get("throughput") or {}).get("Elements", 1)
            runs.setdefault(meta["full_id"], []).append((elements / seconds, elements))
    rates = {}
    for full_id, measured in runs.items():
        per_second = statistics.median(r for r, _ in measured)
        rates[full_id] = (per_second, measured[0][1] / per_second)
    return rates


def memory_rows(text: str) -> dict:
    """engine -> {index, disk, disk_ratio} from the engine benchmark's memory table."""
    rows = {}
    header = re.compile(r"^engine\s+index\s+rss-peak-growth")
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not header.match(line):
            continue
        for row in lines[i + 1 :]:
            fields = row.split()
            if len(fields) != 6:
                break
            name, index, _peak, _rss, disk, ratio = fields
            rows[name] = {
                "index": None if index == "-" else float(index),
                "disk": float(disk),
                "disk_ratio": float(ratio),
            }
    return rows


def server_rows(text: str) -> dict:
    """run name -> {rps, keys, p50, p99, rounds} from server.sh's raw results. When
    the results hold several rounds of a run (benches/targets.sh runs server.sh
    in ROUNDS rounds), each figure is the median of its rounds, taken on its own."""
    rounds = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 5:
            continue
        try:
            figures = [float(f) for f in fields[1:5]]
        except ValueError:
            continue
        rounds.setdefault(fields[0], []).append(figures)
    rows = {}
    for name, runs in rounds.items():
        rows[name] = {
            key: statistics.median(run[i] for run in runs)
            for i, key in enumerate(("rps", "keys", "p50", "p99"))
        }
        rows[name]["rounds"] = len(runs)
    return rows


def put_ratio(text: str):
    """(median, rounds under 1, rounds, ratio of the totals) from put-ratio.sh's summary
    line, or None."""
    m = re.search(r"median of the rounds ([0-9.]+) \((\d+) of (\d+) rounds under 1\)"
                  r".*?ratio ([0-9.]+)", text)
    if not m:
        return None
    return float(m.group(1)), int(m.group(2)), int(m.group(3)), float(m.group(4))


def rate(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.2f} M/s"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k/s"
    return f"{n:.0f}/s"


class Table:
    def __init__(self):
        self.rows = []

    def add(self, target, measured, holds):
        verdict = "not measured" if holds is None else ("**yes**" if holds else "no")
        self.rows.append((target, measured, verdict))

    def ratio(self, target, a, b, need, what):
        """Target `a / b >= need`; `a`, `b` are (label, rate) or None."""
        if a is None or b is None:
            return self.add(target, "not measured", None)
        r = a[1] / b[1]
        text = f"{r:.2f}× ({a[0]} {rate(a[1])} vs {b[0]} {rate(b[1])}); {what}"
        self.add(target, text, r >= need)

    def print(self):
        print("| target | measured (same run) | holds? |")
        print("|---|---|---|")
        for target, measured, verdict in self.rows:
            print(f"| {target} | {measured} | {verdict} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--criterion", type=Path, action="append",
                        help="a criterion folder; give it once per engine run (default "
                             "target/criterion)")
    parser.add_argument("--memory", type=Path, help="the engine benchmark's stdout")
    parser.add_argument("--server", type=Path, help="server.sh's RESULTS_TSV")
    parser.add_argument("--put-ratio", type=Path, help="benches/put-ratio.sh's stdout")
    args = parser.parse_args()

    roots = [r for r in (args.criterion or [Path("target/criterion")]) if r.is_dir()]
    c = criterion_rates(roots)
    mem = memory_rows(args.memory.read_text()) if args.memory and args.memory.exists() else {}
    srv = server_rows(args.server.read_text()) if args.server and args.server.exists() else {}

    def eng(full_id, label=None):
        return (label or full_id.split("/")[1], c[full_id][0]) if full_id in c else None

    t = Table()
    t.ratio("W1 fill ≥ 2.5× fjall", eng("w1_fill/caskade"), eng("w1_fill/fjall"), 2.5, "need 2.5×")

    peers = [eng(f"w2_get/{p}/1t", p) for p in ("sled", "redb", "fjall")]
    peers = [p for p in peers if p]
    best = max(peers, key=lambda p: p[1]) if peers else None
    get1 = eng("w2_get/caskade/1t", "caskade")
    t.ratio("W2 1-thread get ≥ 2× the best peer", get1, best, 2.0, "need 2×")
    t.ratio("W2 1-thread get ≥ 60 % of the HashMap", get1,
            eng("w2_get/hashmap/1t", "hashmap"), 0.6, "need 0.60×")

    w64 = eng("w3_durable_put/caskade/64w", "caskade 64w")
    t.ratio("W3 64 writers ≥ 10× sled's 8-writer figure", w64,
            eng("w3_durable_put/sled/8w", "sled 8w"), 10.0, "need 10×")
    t.ratio("W3 64 writers ≥ 15× caskade's 1 writer", w64,
            eng("w3_durable_put/caskade/1w", "caskade 1w"), 15.0, "need 15×")

    cm = mem.get("caskade")
    if cm and cm["index"] is not None:
        t.add("index ≤ 96 B/key", f"{cm['index']:.1f} B/key", cm["index"] <= 96)
    else:
        t.add("index ≤ 96 B/key", "not measured", None)
    if cm:
        t.add("disk ≤ 1.3× raw after W1",
              f"{cm['disk_ratio']:.2f}× ({cm['disk']:.1f} B/key)", cm["disk_ratio"] <= 1.3)
    else:
        t.add("disk ≤ 1.3× raw after W1", "not measured", None)

    if "open/caskade/hints" in c:
        secs = c["open/caskade/hints"][1]
        keys = c["open/caskade/hints"][0] * secs
        extra = ""
        if "open/caskade/scan" in c:
            extra = f"; the scan {c['open/caskade/scan'][1]:.3f} s"
        t.add(f"open {keys:,.0f} keys from hints ≤ 1 s", f"{secs:.3f} s{extra}", secs <= 1.0)
    else:
        t.add("open 1M keys from hints ≤ 1 s", "not measured", None)

    def srv_rate(name, label, field="rps"):
        return (label, srv[name][field]) if name in srv else None

    get = srv_rate("caskade_get", "caskade GET")
    t.ratio("HTTP GET ≥ 80 % of the hello-world", get,
            srv_rate("hello_get", "hello-world"), 0.8, "need 0.80×")
    t.ratio("HTTP GET ≥ Redis GET", get, srv_rate("redis_get", "Redis GET"), 1.0, "need 1×")
    t.ratio("HTTP durable PUT ≥ Redis SET (appendfsync always)",
            srv_rate("caskade_put", "caskade PUT"),
            srv_rate("redis_set", "Redis SET"), 1.0, "need 1×")
    if args.put_ratio:
        interleaved = put_ratio(args.put_ratio.read_text()) if args.put_ratio.exists() else None
        target = "HTTP durable PUT ≥ Redis SET, the two taken in turn (put-ratio.sh)"
        if interleaved:
            median, under, rounds, totals = interleaved
            t.add(target, f"{median:.2f}× in the median of {rounds} rounds ({under} under 1×); "
                          f"totals {totals:.2f}×; need 1×", median >= 1.0)
        else:
            t.add(target, "not measured", None)
    t.ratio("bulk PUT ≥ 500 k keys/s", srv_rate("caskade_bulk", "caskade bulk", "keys"),
            ("target", 500_000.0), 1.0, "need 1×")
    p99s = [(n, srv[n]["p99"]) for n in ("caskade_get", "caskade_put", "caskade_bulk") if n in srv]
    if p99s:
        refs = ", ".join(f"{n} {srv[n]['p99']:g} ms" for n in ("hello_get", "redis_get", "redis_set")
                         if n in srv)
        text = ", ".join(f"{n.removeprefix('caskade_')} {v:g} ms" for n, v in p99s)
        t.add("p99 ≤ 2 ms at those rates",
              f"{text} (references: {refs})", all(v <= 2.0 for _, v in p99s))
    else:
        t.add("p99 ≤ 2 ms at those rates", "not measured", None)
    t.ratio("compaction costs GET throughput ≤ 20 %",
            srv_rate("get_compacting", "GET while compacting"),
            srv_rate("get_idle", "idle"), 0.8, "need 0.80×")
    t.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
