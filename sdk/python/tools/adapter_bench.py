"""Per-request cost of the ASGI and WSGI adapters (aetherless/asgi.py, aetherless/wsgi.py).

    PYTHONPATH=sdk/python .build-test/venv/bin/python sdk/python/tools/adapter_bench.py [N]

Calls each app through its adapter the way the runtime does (a Request in, a Response out; no
ring, no process), N times after a warm-up, and prints microseconds per call: a raw ASGI app
(the adapter's own cost), and FastAPI (async and sync endpoints) and Flask when they are
installed (scripts/test-venv.sh makes a virtualenv with them). Concurrency 1 runs the event
loop on the calling thread; concurrency 2 hands each request to the loop's own thread.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from aetherless import Request  # noqa: E402
from aetherless.asgi import ASGIHandler  # noqa: E402
from aetherless.wsgi import WSGIHandler  # noqa: E402

HEADERS = [("Host", "localhost:8080"), ("User-Agent", "bench/1"), ("Accept", "*/*")]


async def raw_asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def raw_wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def per_call(handler, target: str, n: int) -> float:
    req = Request("GET", target, HEADERS)
    for _ in range(min(n, 500)):
        assert handler(req).status == 200
    t0 = time.perf_counter()
    for _ in range(n):
        handler(req)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    quiet = {"log": lambda line: None}
    rows = []
    for concurrency in (1, 2):
        with ASGIHandler(raw_asgi, concurrency=concurrency, **quiet) as h:
            rows.append((f"raw ASGI app, concurrency {concurrency}", per_call(h, "/", n)))
    rows.append(("raw WSGI app", per_call(WSGIHandler(raw_wsgi, **quiet), "/", n)))
    try:
        from fastapi import FastAPI
    except ImportError:
        print("(fastapi is not installed: scripts/test-venv.sh makes a virtualenv with it)")
    else:
        app = FastAPI()

        @app.get("/items/{item}")
        async def item_async(item: int, q: str = ""):
            return {"item": item, "q": q}

        @app.get("/sync/{item}")
        def item_sync(item: int, q: str = ""):
            return {"item": item, "q": q}

        for concurrency in (1, 2):
            with ASGIHandler(app, concurrency=concurrency, **quiet) as h:
                rows.append((f"FastAPI async endpoint, concurrency {concurrency}", per_call(h, "/items/3?q=x", n // 2)))
                rows.append((f"FastAPI sync endpoint, concurrency {concurrency}", per_call(h, "/sync/3?q=x", n // 2)))
    try:
        from flask import Flask
    except ImportError:
        pass
    else:
        flask_app = Flask("bench")

        @flask_app.get("/items/<int:item>")
        def flask_item(item):
            return {"item": item}

        rows.append(("Flask", per_call(WSGIHandler(flask_app, **quiet), "/items/3?q=x", n // 2)))
    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"{name:<{width}}  {us:8.1f} us/request")


if __name__ == "__main__":
    main()
