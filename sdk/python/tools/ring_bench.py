#!/usr/bin/env python3
"""One-way throughput and ping-pong latency of the Python ring between two processes.

  python3 sdk/python/tools/ring_bench.py [--sizes 64,1024,16384,65536] [--capacity BYTES]
                                         [--count N] [--pingpong N]

For each payload size: creates a region, spawns a producer and a consumer process
(this script in child mode), the producer writes COUNT fixed-size payloads (each
with its index in the first 8 bytes), the consumer reads and checks length and
index (crc32 is checked by the ring itself).  The rate is measured by the consumer
from its first to its last message.  --pingpong N also measures round trips of a
64-byte message through `ring_peer.py echo`.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from aetherless.ring import Region, unlink_shm  # noqa: E402

_IDX = struct.Struct("<Q")


def child_produce(name: str, size: int, count: int) -> None:
    with Region(name) as reg:
        ring = reg.ring(0)
        body = bytes((k * 7) & 0xFF for k in range(size))
        write = ring.write
        pack = _IDX.pack
        if size >= 8:
            tail = body[8:]
            for i in range(count):
                write(pack(i) + tail, 30)
        else:
            for i in range(count):
                write(body, 30)


def child_consume(name: str, size: int, count: int) -> None:
    with Region(name) as reg:
        ring = reg.ring(0)
        read = ring.read
        unpack = _IDX.unpack_from
        m = read(30)
        t0 = time.perf_counter()
        assert len(m) == size
        for i in range(1, count):
            m = read(30)
            if len(m) != size or (size >= 8 and unpack(m)[0] != i):
                print(f"FAIL index={i} len={len(m)}", flush=True)
                sys.exit(1)
        dt = time.perf_counter() - t0
        n = count - 1
        print(f"{n / dt:.1f} {n * size / dt:.1f} {dt:.6f}", flush=True)


def run_one(size: int, count: int, capacity: int) -> tuple[float, float, float, float]:
    name = f"/aetherless-bench-{os.getpid()}-{size}"
    Region.create(name, capacity).close()
    try:
        me = os.path.abspath(__file__)
        t0 = time.perf_counter()
        cons = subprocess.Popen([sys.executable, me, "_consume", name, str(size), str(count)],
                                stdout=subprocess.PIPE, text=True)
        prod = subprocess.Popen([sys.executable, me, "_produce", name, str(size), str(count)])
        out, _ = cons.communicate(timeout=600)
        prod.wait(timeout=60)
        wall = time.perf_counter() - t0
        if cons.returncode or prod.returncode:
            raise SystemExit(f"bench failed: consumer rc={cons.returncode} {out!r}, producer rc={prod.returncode}")
        msgs, bps, dt = map(float, out.split())
        return msgs, bps, dt, wall
    finally:
        unlink_shm(name, missing_ok=True)


def pingpong(n: int, capacity: int, size: int = 64) -> tuple[float, float]:
    name = f"/aetherless-bench-pp-{os.getpid()}"
    reg = Region.create(name, capacity)
    peer = os.path.join(HERE, "ring_peer.py")
    echo = subprocess.Popen([sys.executable, peer, "echo", "--shm", name, "--timeout", "30"],
                            stdout=subprocess.PIPE, text=True)
    try:
        tx, rx = reg.ring(0), reg.ring(1)
        msg = bytes(size)
        for _ in range(200):  # warm-up (and wait for the echo process to start)
            tx.write(msg, 30)
            rx.read(30)
        t0 = time.perf_counter()
        for _ in range(n):
            tx.write(msg, 30)
            rx.read(30)
        dt = time.perf_counter() - t0
        tx.write(b"", 30)
        rx.read(30)
        echo.communicate(timeout=30)
        return n / dt, dt / n * 1e6
    finally:
        if echo.poll() is None:
            echo.kill()
            echo.wait()
        reg.close()
        unlink_shm(name, missing_ok=True)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] in ("_produce", "_consume"):
        fn = child_produce if sys.argv[1] == "_produce" else child_consume
        fn(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="64,1024,16384,65536")
    p.add_argument("--capacity", type=int, default=1 << 20)
    p.add_argument("--count", type=int, default=0, help="messages per size (default: ~2 GB or 500k)")
    p.add_argument("--pingpong", type=int, default=0, help="round trips of 64 B via ring_peer.py echo")
    a = p.parse_args()
    print(f"capacity={a.capacity} python={sys.version.split()[0]} cpus={os.cpu_count()}")
    print(f"{'payload':>8} {'messages':>9} {'msg/s':>12} {'MB/s':>9} {'time s':>8}")
    for size in map(int, a.sizes.split(",")):
        count = a.count or max(20_000, min(500_000, int(2e9 // max(size, 1))))
        msgs, bps, dt, wall = run_one(size, count, a.capacity)
        print(f"{size:>8} {count:>9} {msgs:>12,.0f} {bps / 1e6:>9,.1f} {dt:>8.2f}", flush=True)
    if a.pingpong:
        rate, us = pingpong(a.pingpong, a.capacity)
        print(f"ping-pong 64 B x {a.pingpong}: {rate:,.0f} round trips/s, {us:.1f} us per round trip")


if __name__ == "__main__":
    main()
