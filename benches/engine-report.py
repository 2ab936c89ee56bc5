#!/usr/bin/env python3
"""Markdown tables of the engine benchmark from criterion's results.

Reads target/criterion/<group>/<bench>/new/{benchmark,estimates}.json as written by
`cargo bench --features bench-peers --bench engine` and prints, per workload, each
engine's throughput (mean time per iteration turned into operations per second) and
caskade's ratio to the best peer (sled, redb, fjall) and to the HashMap ceiling.

    python3 benches/engine-report.py [target/criterion]
"""
import json
import pathlib
import sys

PEERS = ("sled", "redb", "fjall")
ENGINES = ("caskade",) + PEERS + ("hashmap",)


def load(root):
    results = {}
    for bench in root.glob("*/*/new/benchmark.json"):
        meta = json.loads(bench.read_text())
        estimates = json.loads((bench.parent / "estimates.json").read_text())
        elements = meta["throughput"]["Elements"]
        # Criterion's headline figure: the slope of linear sampling, the mean of flat.
        slope = estimates.get("slope")
        mean_ns = (slope or estimates["mean"])["point_estimate"]
        engine, _, variant = meta["function_id"].partition("/")
        results.setdefault((meta["group_id"], variant), {})[engine] = elements / (mean_ns * 1e-9)
    return results


def fmt(ops):
    if ops >= 1e6:
        return f"{ops / 1e6:.2f} M/s"
    if ops >= 1e3:
        return f"{ops / 1e3:.1f} k/s"
    return f"{ops:.0f} /s"


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
    results = load(root)
    print("| workload | " + " | ".join(ENGINES) + " | caskade / best peer | caskade / hashmap |")
    print("|---|" + "---:|" * (len(ENGINES) + 2))
    def order(item):
        (group, variant), _ = item
        digits = "".join(ch for ch in variant if ch.isdigit())
        return group, int(digits) if digits else 0, variant

    for (group, variant), row in sorted(results.items(), key=order):
        name = f"{group} {variant}".strip()
        cells = [fmt(row[e]) if e in row else "–" for e in ENGINES]
        peers = [row[p] for p in PEERS if p in row]
        best = max(peers) if peers else None
        ours = row.get("caskade")
        vs_best = f"{ours / best:.2f}×" if ours and best else "–"
        vs_map = f"{ours / row['hashmap']:.2f}×" if ours and "hashmap" in row else "–"
        print(f"| {name} | " + " | ".join(cells) + f" | {vs_best} | {vs_map} |")


if __name__ == "__main__":
    main()
