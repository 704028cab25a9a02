#!/usr/bin/env python3
"""Requests/s of the Python SDK runtime for a trivial handler, driven over the rings
from Python (this script plays the orchestrator, as the tests do).

  python3 sdk/python/tools/handler_bench.py [--count N] [--window W] [--concurrency C]

Prints three numbers:
  dispatch only    decode + handler + encode in this process, no rings (µs/request)
  round trip       one request in flight at a time: write ring 0, wait for ring 1
  pipelined        up to W requests in flight (the runtime still handles them one by one
                   with concurrency 1; this is the ring + runtime throughput)
The handler is `return {"hello": req.query.get("name", "world")}`.  The driver is
Python too, so the numbers include its own encode/decode cost; it waits for responses on
the response bell (an eventfd, ring_peer.BellReader) as the orchestrator does.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, SDK)

from aetherless.protocol import _RESP, decode_response, encode_request  # noqa: E402
from aetherless.ring import Region, unlink_shm  # noqa: E402
from aetherless.runtime import make_dispatcher  # noqa: E402
from ring_peer import BellReader  # noqa: E402  (this script's folder is sys.path[0])

HANDLER = """
import aetherless

@aetherless.handler
def handle(req):
    return {"hello": req.query.get("name", "world")}
"""


def readline(conn) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            raise SystemExit("runtime closed the control socket")
        buf += chunk
    return buf[:-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=50000)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=1)
    args = ap.parse_args()

    msg = encode_request(1, "GET", "/hello?name=bench", [("Host", "localhost"), ("User-Agent", "bench")])

    # 1. dispatch only
    def handle(req):
        return {"hello": req.query.get("name", "world")}

    dispatch = make_dispatcher(handle, 1 << 20)
    n = min(args.count, 100000)
    t0 = time.perf_counter()
    for _ in range(n):
        dispatch(msg)
    dt = time.perf_counter() - t0
    print(f"dispatch only : {dt / n * 1e6:6.2f} us/request ({n / dt:,.0f}/s) in-process")

    tmp = tempfile.mkdtemp(prefix="aetherless-bench-")
    handler = os.path.join(tmp, "handler.py")
    with open(handler, "w") as f:
        f.write(HANDLER)
    sock_path = os.path.join(tmp, "ctl.sock")
    name = f"/aetherless-bench-{os.getpid()}"
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(sock_path)
    lst.listen(1)
    region = Region.create(name, 1 << 20)
    bell = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    env = dict(os.environ, PYTHONPATH=SDK, AETHER_SOCKET=sock_path, AETHER_FUNCTION_ID="bench",
               AETHER_TRIGGER_PORT="0", AETHER_PROTOCOL="sdk", AETHER_INSTANCE="0",
               AETHER_CONCURRENCY=str(args.concurrency))
    proc = subprocess.Popen([sys.executable, "-m", "aetherless", handler], env=env, stdin=subprocess.DEVNULL)
    try:
        conn, _ = lst.accept()
        assert readline(conn) == b"READY"
        # ATTACH passes the response bell and the region, in that order.
        fd = os.open("/dev/shm" + name, os.O_RDWR | os.O_CLOEXEC)
        socket.send_fds(conn, [f"ATTACH {name}\n".encode()], [bell, fd])
        os.close(fd)
        assert readline(conn) == b"ATTACHED bell"
        req, resp = region.ring(0), BellReader(region.ring(1), bell)
        write, read = req.write, resp.read
        unpack = _RESP.unpack_from

        r = decode_response(dispatch(msg))
        expect = (r.status, r.body)
        for _ in range(1000):  # warm up
            write(msg)
            read()
        write(msg)
        m = decode_response(read())
        assert (m.status, m.body) == expect, m

        # 2. round trip, one in flight
        count = args.count
        t0 = time.perf_counter()
        for _ in range(count):
            write(msg)
            out = read()
        dt = time.perf_counter() - t0
        assert unpack(out)[2] == 200
        print(f"round trip    : {count / dt:,.0f} requests/s ({dt / count * 1e6:.1f} us each, 1 in flight)")

        # 3. pipelined
        w = args.window
        t0 = time.perf_counter()
        sent = got = 0
        while got < count:
            while sent < count and sent - got < w:
                write(msg)
                sent += 1
            read()
            got += 1
        dt = time.perf_counter() - t0
        print(f"pipelined     : {count / dt:,.0f} requests/s (window {w})")
        print(f"(runtime concurrency {args.concurrency}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
    finally:
        proc.kill()
        proc.wait()
        os.close(bell)
        region.close()
        unlink_shm(name, True)
        lst.close()
        os.unlink(sock_path)
        os.unlink(handler)
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
