#!/usr/bin/env python3
"""Loads keys into a caskade server through POST /v1/bulk, for benches/server.sh.

server-load.py URL KEYS VALUE_BYTES PASSES [BULK]
Writes keys k0..k{KEYS-1} of the entity "user" PASSES times (each pass overwrites the
previous one: PASSES > 1 makes garbage for compaction), BULK (default 1000) puts per
request, 4 keep-alive connections. Waits first (up to READY_WAIT_S) for GET /readyz
to answer 200: a server prints its address before its store is open. Exits non-zero on
any answer other than 200.
"""
import http.client
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

url, keys, value_bytes, passes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
bulk = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
host = urllib.parse.urlsplit(url).netloc
value = "v" * value_bytes
bodies = []
for start in range(0, keys, bulk):
    ops = ",".join(
        '{"op":"put","entity":"user","key":"k%d","value":"%s"}' % (i, value)
        for i in range(start, min(start + bulk, keys))
    )
    bodies.append(('{"operations":[' + ops + "]}").encode())

local = threading.local()


def post(body):
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = http.client.HTTPConnection(host, timeout=120)
    conn.request("POST", "/v1/bulk", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise SystemExit(f"bulk answered {resp.status}: {data[:300]!r}")


READY_WAIT_S = 30


def wait_ready():
    deadline = time.monotonic() + READY_WAIT_S
    while True:
        try:
            conn = http.client.HTTPConnection(host, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} was not ready within {READY_WAIT_S} s")
        time.sleep(0.05)


wait_ready()
t0 = time.monotonic()
with ThreadPoolExecutor(4) as pool:
    for _ in range(passes):
        list(pool.map(post, bodies))
dt = time.monotonic() - t0
n = keys * passes
print(f"loaded {n} puts ({value_bytes}-byte values, {passes} pass(es)) in {dt:.1f} s: {n / dt:,.0f} keys/s")
