"""FastAPI, Starlette and Flask apps through the ASGI and WSGI adapters: one conformance suite
(methods, status codes, repeated headers, query strings, JSON and binary bodies, the framework's
own 404/405/500), lifespan startup and its failure, and each kind of app served end to end by the
runtime process (AETHER_APP).

The frameworks come from the pinned test virtualenv (scripts/test-venv.sh), and the SDK from
this folder, not installed:

    PYTHONPATH=sdk/python AETHER_REQUIRE_FRAMEWORKS=1 .build-test/venv/bin/python \\
        -m unittest discover -s sdk/python/tests -p test_frameworks.py

With the system python, which has none of them, the tests are skipped; AETHER_REQUIRE_FRAMEWORKS=1
(what scripts/test.sh sets) makes a missing framework an error instead.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, and the
# names they use are imported inside the app factories.
import json
import os
import sys
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, SDK)

from aetherless import testing  # noqa: E402
from aetherless.asgi import LifespanStartupFailed  # noqa: E402

try:
    import fastapi
    import flask
    import starlette
except ImportError:
    if os.environ.get("AETHER_REQUIRE_FRAMEWORKS") == "1":
        raise
    fastapi = flask = starlette = None

needs_frameworks = unittest.skipIf(
    fastapi is None,
    "FastAPI, Starlette and Flask are not installed here: scripts/test-venv.sh makes the test "
    "virtualenv with them, and scripts/test.sh runs these tests in it",
)

BINARY = bytes(range(256)) * 4


# --------------------------------------------------------------------------- the apps


def fastapi_app(events=None, fail_startup=False):
    from contextlib import asynccontextmanager

    from fastapi import Body, FastAPI, Query, Request, Response
    from fastapi.responses import JSONResponse

    @asynccontextmanager
    async def lifespan(app):
        if fail_startup:
            raise ConnectionError("no database at db:5432")
        if events is not None:
            events.append("startup")
        yield {"pool": "ready"}
        if events is not None:
            events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/items/{item}")
    async def get_item(item: int, q: list[str] = Query(default=[])):
        return {"item": item, "q": q}

    @app.post("/items", status_code=201)
    async def create(payload: dict = Body(...)):
        return {"created": payload}

    @app.put("/items/{item}")
    def replace(item: int, payload: dict = Body(...)):  # a sync endpoint: anyio's worker thread
        return {"replaced": item, "with": payload}

    @app.patch("/items/{item}")
    async def patch(item: int, payload: dict = Body(...)):
        return {"patched": item, **payload}

    @app.delete("/items/{item}", status_code=204)
    async def delete(item: int):
        return Response(status_code=204)

    @app.post("/binary")
    async def binary(request: Request):
        return Response(await request.body(), media_type="application/octet-stream")

    @app.get("/headers")
    async def headers(request: Request):
        return {"x-rep": request.headers.getlist("x-rep"), "host": request.headers.get("host")}

    @app.get("/cookies")
    async def cookies(response: Response):
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return {"cookies": 2}

    @app.get("/status/{code}")
    async def status(code: int):
        return JSONResponse({"status": code}, status_code=code)

    @app.get("/state")
    async def state(request: Request):
        return {"pool": request.state.pool}

    @app.get("/boom")
    async def boom():
        raise RuntimeError("kaboom")

    return app


def starlette_app(events=None, fail_startup=False):
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    @asynccontextmanager
    async def lifespan(app):
        if fail_startup:
            raise ConnectionError("no database at db:5432")
        if events is not None:
            events.append("startup")
        yield {"pool": "ready"}
        if events is not None:
            events.append("shutdown")

    async def item(request):
        if request.method == "GET":
            return JSONResponse({"item": int(request.path_params["item"]), "q": request.query_params.getlist("q")})
        if request.method == "DELETE":
            return Response(status_code=204)
        payload = await request.json()
        key = {"PUT": "replaced", "PATCH": "patched"}[request.method]
        return JSONResponse({key: int(request.path_params["item"]), "with": payload})

    async def create(request):
        return JSONResponse({"created": await request.json()}, status_code=201)

    async def binary(request):
        return Response(await request.body(), media_type="application/octet-stream")

    async def headers(request):
        return JSONResponse({"x-rep": request.headers.getlist("x-rep"), "host": request.headers.get("host")})

    async def cookies(request):
        response = JSONResponse({"cookies": 2})
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    async def status(request):
        code = int(request.path_params["code"])
        return JSONResponse({"status": code}, status_code=code)

    async def state(request):
        return JSONResponse({"pool": request.state.pool})

    async def boom(request):
        raise RuntimeError("kaboom")

    async def text(request):
        return PlainTextResponse("caf\u00e9")

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/items/{item:int}", item, methods=["GET", "PUT", "PATCH", "DELETE"]),
            Route("/items", create, methods=["POST"]),
            Route("/binary", binary, methods=["POST"]),
            Route("/headers", headers),
            Route("/cookies", cookies),
            Route("/status/{code:int}", status),
            Route("/state", state),
            Route("/boom", boom),
            Route("/text", text),
        ],
    )


def flask_app():
    from flask import Flask, Response, jsonify, request

    app = Flask("conformance")

    @app.get("/items/<int:item>")
    def get_item(item):
        return {"item": item, "q": request.args.getlist("q")}

    @app.post("/items")
    def create():
        return {"created": request.get_json()}, 201

    @app.put("/items/<int:item>")
    def replace(item):
        return {"replaced": item, "with": request.get_json()}

    @app.patch("/items/<int:item>")
    def patch(item):
        return {"patched": item, **request.get_json()}

    @app.delete("/items/<int:item>")
    def delete(item):
        return "", 204

    @app.post("/binary")
    def binary():
        return Response(request.get_data(), mimetype="application/octet-stream")

    @app.get("/headers")
    def headers():
        # WSGI joins a repeated header into one HTTP_X_REP value.
        return {"x-rep": request.headers.getlist("X-Rep"), "host": request.host}

    @app.get("/cookies")
    def cookies():
        response = jsonify(cookies=2)
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    @app.get("/status/<int:code>")
    def status(code):
        return {"status": code}, code

    @app.get("/boom")
    def boom():
        raise RuntimeError("kaboom")

    return app


# --------------------------------------------------------------------------- the suite


class Conformance:
    """The same requests against each framework's app (``self.fn``: its adapter)."""

    # What the framework says for a repeated request header read back as a list.
    repeated_header = ["1", "2"]

    def call(self, method, target, **kw):
        return testing.call(self.fn, method, target, log=self.logs.append, **kw)

    def header_values(self, resp, name):
        return [v for n, v in resp.headers if n.lower() == name]

    def test_methods_and_json_bodies(self):
        resp = self.call("GET", "/items/3?q=a&q=b%20c")
        self.assertEqual((resp.status, resp.json()), (200, {"item": 3, "q": ["a", "b c"]}))
        self.assertEqual(self.header_values(resp, "content-type"), ["application/json"])
        resp = self.call("POST", "/items", json={"name": "caf\u00e9", "n": [1, 2.5, None]})
        self.assertEqual((resp.status, resp.json()), (201, {"created": {"name": "caf\u00e9", "n": [1, 2.5, None]}}))
        resp = self.call("PUT", "/items/4", json={"a": 1})
        self.assertEqual((resp.status, resp.json()), (200, {"replaced": 4, "with": {"a": 1}}))
        resp = self.call("PATCH", "/items/5", json={"b": 2})
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.json()["patched"], 5)
        resp = self.call("DELETE", "/items/6")
        self.assertEqual((resp.status, resp.body), (204, b""))

    def test_binary_body(self):
        resp = self.call("POST", "/binary", headers={"Content-Type": "application/octet-stream"}, body=BINARY)
        self.assertEqual((resp.status, resp.body), (200, BINARY))
        self.assertEqual(self.header_values(resp, "content-type"), ["application/octet-stream"])

    def test_repeated_headers_both_ways(self):
        resp = self.call("GET", "/headers", headers=[("Host", "fn.example:8080"), ("X-Rep", "1"), ("X-Rep", "2")])
        self.assertEqual(resp.json(), {"x-rep": self.repeated_header, "host": "fn.example:8080"})
        resp = self.call("GET", "/cookies")
        self.assertEqual(resp.status, 200)
        cookies = self.header_values(resp, "set-cookie")
        self.assertEqual(len(cookies), 2)
        self.assertTrue(cookies[0].startswith("a=1;") and cookies[1].startswith("b=2;"), cookies)

    def test_status_codes(self):
        for code in (200, 201, 202, 301, 400, 401, 403, 409, 418, 422, 429, 500, 502, 503):
            resp = self.call("GET", f"/status/{code}")
            self.assertEqual(resp.status, code)
            if code not in (204, 304):
                self.assertEqual(resp.json(), {"status": code})

    def test_framework_404_405_500(self):
        self.assertEqual(self.call("GET", "/nowhere").status, 404)
        resp = self.call("POST", "/items/3")
        self.assertEqual(resp.status, 405)
        allowed = {m.strip() for v in self.header_values(resp, "allow") for m in v.split(",")}
        self.assertIn("GET", allowed)
        resp = self.call("GET", "/boom")
        self.assertEqual(resp.status, 500)
        self.assertNotIn(b"kaboom", resp.body)
        self.assertIn("RuntimeError: kaboom", "\n".join(self.logs) + self.framework_log())
        # And the next request is served.
        self.assertEqual(self.call("GET", "/items/1").status, 200)

    def framework_log(self) -> str:
        return ""


class ASGILifespan:
    make = None  # the app factory

    def test_startup_before_serving_and_state_in_requests(self):
        events = []
        with testing.asgi(self.make(events), log=self.logs.append) as fn:
            self.assertEqual(events, ["startup"])  # before any request
            resp = testing.call(fn, "GET", "/state")
            self.assertEqual((resp.status, resp.json()), (200, {"pool": "ready"}))
        self.assertEqual(events, ["startup", "shutdown"])

    def test_startup_failure(self):
        with self.assertRaises(LifespanStartupFailed) as cm:
            testing.asgi(self.make(fail_startup=True), log=self.logs.append)
        self.assertIn("ConnectionError: no database at db:5432", str(cm.exception))


@needs_frameworks
class TestFastAPI(Conformance, ASGILifespan, unittest.TestCase):
    make = staticmethod(fastapi_app)

    def setUp(self):
        self.logs = []
        self.fn = testing.asgi(fastapi_app(), log=self.logs.append)
        self.addCleanup(self.fn.close)

    def test_validation_error_is_the_frameworks_422(self):
        resp = self.call("GET", "/items/not-a-number")
        self.assertEqual(resp.status, 422)
        self.assertEqual(resp.json()["detail"][0]["loc"], ["path", "item"])
        self.assertEqual(self.call("POST", "/items", body=b"{not json", headers={"Content-Type": "application/json"}).status, 422)

    def test_sync_endpoints_share_one_worker_thread(self):
        import threading

        for _ in range(3):
            self.assertEqual(self.call("PUT", "/items/1", json={}).status, 200)
        workers = [t for t in threading.enumerate() if t.name.startswith("AnyIO worker")]
        self.assertEqual(len(workers), 1, workers)  # not one new thread per request


@needs_frameworks
class TestStarlette(Conformance, ASGILifespan, unittest.TestCase):
    make = staticmethod(starlette_app)

    def setUp(self):
        self.logs = []
        self.fn = testing.asgi(starlette_app(), log=self.logs.append)
        self.addCleanup(self.fn.close)

    def test_text(self):
        resp = self.call("GET", "/text")
        self.assertEqual((resp.text(), self.header_values(resp, "content-type")), ("caf\u00e9", ["text/plain; charset=utf-8"]))


@needs_frameworks
class TestFlask(Conformance, unittest.TestCase):
    repeated_header = ["1, 2"]

    def setUp(self):
        self.logs = []
        self.errors = __import__("io").StringIO()
        app = flask_app()
        self.fn = __import__("aetherless.wsgi", fromlist=["WSGIHandler"]).WSGIHandler(
            app, log=self.logs.append, errors=self.errors)

    def framework_log(self) -> str:
        return self.errors.getvalue()  # Flask logs the exception to wsgi.errors


# --------------------------------------------------------------------------- through the runtime

FASTAPI_MAIN = """
    from contextlib import asynccontextmanager
    import os
    from fastapi import FastAPI, Request

    @asynccontextmanager
    async def lifespan(app):
        if os.environ.get("FAIL_STARTUP"):
            raise ConnectionError("no database at db:5432")
        open(os.path.join(os.path.dirname(__file__), "started"), "w").close()
        yield {"pool": "ready"}

    app = FastAPI(lifespan=lifespan)

    @app.get("/hello")
    async def hello(request: Request, name: str = "world"):
        return {"hello": name, "pool": request.state.pool}
"""

FASTAPI_THREADS_IN_STARTUP = """
    import asyncio
    from contextlib import asynccontextmanager
    import anyio
    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(app):
        # Threads, both ways an app starts them; all ended when the template is checkpointed.
        await anyio.to_thread.run_sync(sum, [1, 2])
        await asyncio.get_running_loop().run_in_executor(None, sum, [3])
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/sync")
    def sync_endpoint():
        return {"ok": True}
"""

FLASK_MAIN = """
    from flask import Flask, request
    app = Flask(__name__)

    @app.post("/hello")
    def hello():
        return {"hello": request.get_json()["name"]}, 201
"""


@needs_frameworks
class TestThroughTheRuntime(unittest.TestCase):
    """Each kind of app served by `python3 -m aetherless` with AETHER_APP, over the rings."""

    def setUp(self):
        from test_runtime import RuntimeCase

        class Case(RuntimeCase):
            def runTest(self):
                pass

        self.case = Case()
        self.case.setUp()
        self.addCleanup(self.case.doCleanups)

    def test_fastapi(self):
        c = self.case
        c.start(textwrap.dedent(FASTAPI_MAIN), env={"AETHER_APP": "asgi:app"}, handshake=False)
        c.accept()
        self.assertEqual(c.line(), b"READY")
        self.assertTrue(os.path.exists(os.path.join(c.tmp, "started")))  # lifespan startup before READY
        c.attach_instance()
        m = c.call(1, "/hello?name=ring", headers=[("Host", "localhost")])
        self.assertEqual((m.status, json.loads(m.body)), (200, {"hello": "ring", "pool": "ready"}))
        self.assertEqual(c.call(2, "/nowhere").status, 404)

    def test_fastapi_startup_failure(self):
        c = self.case
        c.start(textwrap.dedent(FASTAPI_MAIN), env={"AETHER_APP": "asgi:app", "FAIL_STARTUP": "1"},
                handshake=False, region=False)
        self.assertEqual(c.proc.wait(10), 1)
        self.assertIn("the ASGI app's lifespan startup failed", c.stderr())
        self.assertIn("ConnectionError: no database at db:5432", c.stderr())

    def test_fastapi_snapshot_template_is_single_threaded(self):
        c = self.case
        c.start(textwrap.dedent(FASTAPI_THREADS_IN_STARTUP), env={"AETHER_APP": "asgi:app"}, handshake=False)
        c.accept()
        self.assertEqual(c.line(), b"READY")
        c.conn.sendall(b"CHECKPOINT\n")
        self.assertEqual(c.line(), b"FROZEN", c.stderr())
        c.attach_instance()
        m = c.call(1, "/sync")
        self.assertEqual((m.status, json.loads(m.body)), (200, {"ok": True}))

    def test_flask(self):
        c = self.case
        c.start(textwrap.dedent(FLASK_MAIN), env={"AETHER_APP": "wsgi:app"}, concurrency=2)
        m = c.call(1, "/hello", method="POST", headers=[("Content-Type", "application/json")], body=b'{"name": "ring"}')
        self.assertEqual((m.status, json.loads(m.body)), (201, {"hello": "ring"}))
        self.assertEqual(c.call(2, "/hello").status, 405)


if __name__ == "__main__":
    unittest.main()
