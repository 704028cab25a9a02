"""Tests of aetherless.testing: a handler, or an app through its adapter, called the runtime's way.

    cd sdk/python && python3 -m unittest discover -s tests -v
"""

from __future__ import annotations

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, SDK)

import aetherless  # noqa: E402
from aetherless import HTTPError, Response, testing  # noqa: E402


def handle(req):
    if req.path == "/hello":
        return {"hello": req.query.get("name", "world"), "agent": req.headers.get("user-agent")}
    if req.path == "/echo":
        return Response(200, [("Content-Type", req.headers.get("content-type", "x/y")), ("Set-Cookie", "a=1"),
                              ("Set-Cookie", "b=2")], req.body)
    if req.path == "/json":
        return {"got": req.json(), "method": req.method}
    if req.path == "/missing":
        raise HTTPError(404, "no such thing")
    if req.path == "/big":
        return b"x" * 1000
    if req.path == "/bad-header":
        return Response(200, [("X", "a\nb")], "x")
    raise RuntimeError("kaboom")


class TestCall(unittest.TestCase):
    def test_results_as_the_runtime_answers_them(self):
        resp = testing.call(handle, "GET", "/hello?name=x%20y", {"User-Agent": "test/1"})
        self.assertEqual((resp.status, resp.headers), (200, [("Content-Type", "application/json")]))
        self.assertEqual(resp.json(), {"hello": "x y", "agent": "test/1"})
        resp = testing.call(handle, "POST", "/echo", [("content-type", "a/b")], b"\x00\xff")
        self.assertEqual(resp.headers, [("Content-Type", "a/b"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
        self.assertEqual(resp.body, b"\x00\xff")
        self.assertEqual(testing.call(handle, "POST", "/echo", body="\u00e9").text(), "\u00e9")

    def test_json_body(self):
        resp = testing.call(handle, "PUT", "/json", json={"a": [1, 2]})
        self.assertEqual(resp.json(), {"got": {"a": [1, 2]}, "method": "PUT"})
        resp = testing.call(handle, "POST", "/echo", json=[1], headers={"Content-Type": "application/x-custom"})
        self.assertEqual((resp.headers[0], resp.body), (("Content-Type", "application/x-custom"), b"[1]"))
        resp = testing.call(handle, "POST", "/echo", json={"k": "v"})
        self.assertEqual(resp.headers[0], ("Content-Type", "application/json"))
        with self.assertRaises(ValueError) as cm:
            testing.call(handle, "POST", "/json", body=b"x", json={})
        self.assertIn("body or json, not both", str(cm.exception))

    def test_errors_as_the_runtime_answers_them(self):
        logs = []
        self.assertEqual(testing.call(handle, "GET", "/missing", log=logs.append).json(), {"error": "no such thing"})
        resp = testing.call(handle, "GET", "/boom", log=logs.append)
        self.assertEqual((resp.status, resp.json()), (500, {"error": "internal error"}))
        self.assertIn("RuntimeError: kaboom", logs[-1])
        self.assertEqual(testing.call(handle, "POST", "/json", body=b"{", log=logs.append).status, 400)
        resp = testing.call(handle, "GET", "/big", max_payload=500, log=logs.append)
        self.assertEqual(resp.status, 500)
        self.assertIn("max_payload of 500", resp.json()["error"])
        self.assertEqual(testing.call(handle, "GET", "/bad-header", log=logs.append).status, 500)
        self.assertIn("has a CR, LF or NUL in its value", logs[-1])

    def test_registered_handler_of_a_module(self):
        @aetherless.handler
        def hello(req):
            return f"hi {req.method}"

        self.addCleanup(aetherless._handlers.pop, __name__, None)
        self.assertEqual(testing.call(aetherless.registered_handlers()[__name__], "DELETE").text(), "hi DELETE")

    def test_apps(self):
        async def asgi_app(scope, receive, send):
            if scope["type"] == "lifespan":
                await receive()
                scope["state"]["greeting"] = "hello"
                await send({"type": "lifespan.startup.complete"})
                await receive()
                await send({"type": "lifespan.shutdown.complete"})
                return
            body = (await receive())["body"]
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-path", scope["raw_path"])]})
            await send({"type": "http.response.body", "body": scope["state"]["greeting"].encode() + b" " + body})

        with testing.asgi(asgi_app) as fn:
            resp = testing.call(fn, "POST", "/p%20q", body=b"world")
        self.assertEqual((resp.status, resp.headers, resp.body), (200, [("x-path", "/p%20q")], b"hello world"))

        def wsgi_app(environ, start_response):
            start_response("200 OK", [("X-Method", environ["REQUEST_METHOD"])])
            return [environ["wsgi.input"].read()]

        resp = testing.call(testing.wsgi(wsgi_app), "PATCH", "/", body=b"data")
        self.assertEqual((resp.status, resp.headers, resp.body), (200, [("X-Method", "PATCH")], b"data"))


if __name__ == "__main__":
    unittest.main()
