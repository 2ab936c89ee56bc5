#!/usr/bin/env python3
"""Time per `fdatasync` after a write, by how the file's blocks were prepared.

What `engine/src/append.rs` does under `--sync always` rests on this measurement:
blocks reserved by `fallocate` alone are *unwritten* extents, and a sync after a write
that reaches a new one also writes the extent change (metadata); blocks written with
zeros and synced once beforehand are plain data, and a sync writes the data pages only.

    python3 benches/fsync-probe.py [DIR] [--writes N] [--bytes B]

DIR (default: the current directory) should be on the file system the store uses. For
each of three preparations of a 64 MiB file — `fallocate` only, zeros written and synced,
nothing (appends grow the file) — it writes B bytes (default 7,800: two new 4 KiB blocks
per write) N times (default 1,500), each followed by an `fdatasync`, and prints the mean,
median and p99 time per `fdatasync`. Linux (`posix_fallocate`, `fdatasync`).
"""

import argparse
import os
import statistics
import tempfile
import time

FILE_BYTES = 64 << 20
ZERO_PIECE = 1 << 20
SETTLE_SECONDS = 2.0


def prepare(fd: int, how: str) -> None:
    if how in ("fallocate", "zeroed"):
        os.posix_fallocate(fd, 0, FILE_BYTES)
    if how == "zeroed":
        zeros = bytes(ZERO_PIECE)
        for at in range(0, FILE_BYTES, ZERO_PIECE):
            os.pwrite(fd, zeros, at)
    os.fsync(fd)


def probe(directory: str, how: str, writes: int, size: int) -> list:
    record = b"x" * size
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        fd = os.open(os.path.join(tmp, "probe"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            prepare(fd, how)
            # The preparation wrote up to 64 MiB: let the device finish with it, so
            # the timed syncs do not queue behind it.
            time.sleep(SETTLE_SECONDS)
            times = []
            for i in range(writes):
                os.pwrite(fd, record, i * size)
                started = time.perf_counter()
                os.fdatasync(fd)
                times.append(time.perf_counter() - started)
            return times
        finally:
            os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default=".")
    parser.add_argument("--writes", type=int, default=1500)
    parser.add_argument("--bytes", type=int, default=7800)
    args = parser.parse_args()
    if args.writes * args.bytes > FILE_BYTES:
        parser.error("--writes × --bytes must fit in 64 MiB")
    for how in ("fallocate", "zeroed", "appended"):
        times = sorted(probe(args.dir, how, args.writes, args.bytes))
        us = [t * 1e6 for t in times]
        print(f"{how:9s}  fdatasync mean {statistics.fmean(us):7.1f} µs  "
              f"p50 {us[len(us) // 2]:7.1f}  p99 {us[int(len(us) * 0.99)]:7.1f}")


if __name__ == "__main__":
    main()
