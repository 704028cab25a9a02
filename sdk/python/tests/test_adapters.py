"""Tests of the ASGI and WSGI adapters (aetherless/asgi.py, aetherless/wsgi.py) with hand-written
apps: the scope and environ they build, how they answer, every error a user can hit. The same
adapters with FastAPI, Starlette and Flask: tests/test_frameworks.py.

    cd sdk/python && python3 -m unittest discover -s tests -v
"""

from __future__ import annotations

import _thread
import asyncio
import http
import io
import json
import os
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, SDK)

from aetherless import Request, testing  # noqa: E402
from aetherless.asgi import ASGIHandler, LifespanShutdownFailed, LifespanStartupFailed  # noqa: E402
from aetherless.wsgi import WSGIHandler  # noqa: E402

INTERNAL_ERROR = {"error": "internal error"}


def request(method="GET", target="/", headers=(), body=b"", rid=7):
    return Request(method, target, headers, body, request_id=rid)


def settled_thread_count() -> int:
    """Threads running once those an earlier test ended have finished exiting."""
    deadline = time.monotonic() + 2
    while _thread._count() > 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    return _thread._count()


def respond(status=200, headers=(), body=b"ok"):
    """An ASGI app answering with these parts (and no lifespan)."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body})

    return app


class Logged:
    def __init__(self):
        self.lines = []

    def __call__(self, line):
        self.lines.append(line)

    @property
    def text(self):
        return "\n".join(self.lines)


class ASGICase(unittest.TestCase):
    def handler(self, app, **kw):
        self.log = Logged()
        h = ASGIHandler(app, log=self.log, **kw)
        self.addCleanup(h.close)
        return h

    def assertInternalError(self, resp, *in_log):
        self.assertEqual(resp.status, 500)
        self.assertEqual(resp.headers, [(b"Content-Type", b"application/json")])
        self.assertEqual(json.loads(resp.body), INTERNAL_ERROR)
        for text in in_log:
            self.assertIn(text, self.log.text)


class TestASGIScope(ASGICase):
    def test_scope_is_exact(self):
        seen = {}

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                return
            seen["scope"] = scope
            seen["first"] = await receive()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        h = self.handler(app)
        headers = [("Host", "example.com:8080"), ("X-Rep", "1"), ("x-rep", "2"), ("Cookie", "a=1"), ("Content-Type", "a/b")]
        h(request("POST", "/a%20b/%C3%A9?x=1&y=%20&x=2", headers, b"\x00\x01\xff"))
        self.assertEqual(seen["scope"], {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/a b/\u00e9",
            "raw_path": b"/a%20b/%C3%A9",
            "query_string": b"x=1&y=%20&x=2",
            "root_path": "",
            "headers": [(b"host", b"example.com:8080"), (b"x-rep", b"1"), (b"x-rep", b"2"),
                        (b"cookie", b"a=1"), (b"content-type", b"a/b")],
            "client": None,
            "server": None,
            "state": {},
        })
        self.assertEqual(seen["first"], {"type": "http.request", "body": b"\x00\x01\xff", "more_body": False})

    def test_no_query_and_non_ascii_target(self):
        seen = {}

        async def app(scope, receive, send):
            seen.update(scope)
            await respond()(scope, receive, send)

        h = self.handler(app)
        h(request("GET", "/caf\u00e9"))
        self.assertEqual((seen["path"], seen["raw_path"], seen["query_string"]), ("/caf\u00e9", "/caf\u00e9".encode(), b""))
        h(request("GET", "/x?"))
        self.assertEqual((seen["path"], seen["query_string"]), ("/x", b""))

    def test_disconnect_comes_after_the_response_is_complete(self):
        order = []

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            await receive()

            async def watch():
                order.append((await receive())["type"])

            watcher = asyncio.get_running_loop().create_task(watch())
            await asyncio.sleep(0)
            await send({"type": "http.response.start", "status": 200})
            order.append("start")
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            order.append("part")
            await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b"b"})
            order.append("end")
            await watcher

        resp = self.handler(app)(request())
        self.assertEqual(order, ["start", "part", "end", "http.disconnect"])
        self.assertEqual(resp.body, b"ab")


class TestASGIResponses(ASGICase):
    def test_status_headers_and_body_exact(self):
        headers = [(b"content-type", b"text/plain"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"),
                   (b"x-utf8", "\u00e9".encode()), (b"x-tab", b"a\tb")]
        for status in (200, 201, 204, 302, 404, 418, 500, 503, 599, http.HTTPStatus.ACCEPTED):
            resp = self.handler(respond(status, headers, b"\x00body"))(request())
            self.assertEqual((resp.status, resp.headers, resp.body), (int(status), headers, b"\x00body"))
            self.assertIs(type(resp.status), int)

    def test_streamed_body_is_buffered_and_late_messages_ignored(self):
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200, "headers": [(bytearray(b"x-a"), bytearray(b"1"))]})
            for part in (b"one ", bytearray(b"two "), memoryview(b"three"), b""):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body"})  # body and more_body default to b"" and False
            await send({"type": "http.response.body", "body": b"ignored"})

        resp = self.handler(app)(request())
        self.assertEqual((resp.status, resp.headers, resp.body), (200, [(b"x-a", b"1")], b"one two three"))

    def test_the_wire_through_testing(self):
        app = respond(201, [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")], b"made")
        with testing.asgi(app, log=Logged()) as fn:
            resp = testing.call(fn, "PUT", "/x")
        self.assertEqual((resp.status, resp.headers, resp.body), (201, [("set-cookie", "a=1"), ("set-cookie", "b=2")], b"made"))

    def test_statuses_the_gateway_refuses(self):
        for status, words in ((101, "status 101"), (100, "status 100"), (199, "status 199"), (600, "status 600"),
                              (99, "status 99"), ("200", "the status '200'"), (200.0, "the status 200.0"), (True, "the status True")):
            resp = self.handler(respond(status))(request())
            self.assertInternalError(resp, words)
            self.assertIn("request 7 GET /:", self.log.text)
            self.assertIn("answering 500", self.log.text)

    def test_invalid_headers(self):
        cases = [
            ([("content-type", "text/plain")], "byte strings"),
            ([(b"x", "str value")], "byte strings"),
            ([(b"x", b"a\r\nInjected: 1")], "control character"),
            ([(b"x", b"bell\x07")], "control character"),
            ([(b"bad name", b"v")], "invalid response header name"),
            ([(b"x", b"1", b"extra")], "invalid response header"),
            ([b"xy"], "byte strings"),  # unpacks as (120, 121)
            (None, "invalid response header"),
        ]
        for headers, words in cases:
            async def app(scope, receive, send, headers=headers):
                if scope["type"] != "http":
                    return
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": b""})

            self.assertInternalError(self.handler(app)(request()), words)

    def test_body_that_is_not_bytes(self):
        self.assertInternalError(self.handler(respond(200, [], "text"))(request()), "body of type str")

    def test_exception_before_the_response(self):
        async def app(scope, receive, send):
            if scope["type"] == "http":
                raise KeyError("secret")

        resp = self.handler(app)(request("GET", "/boom"))
        self.assertInternalError(resp, "request 7 GET /boom: ASGI app failed", "Traceback", "KeyError: 'secret'")
        self.assertNotIn(b"secret", resp.body)

    def test_exception_after_start_before_the_last_part(self):
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"half", "more_body": True})
            raise RuntimeError("midway")

        self.assertInternalError(self.handler(app)(request()), "ASGI app failed", "RuntimeError: midway")

    def test_exception_after_the_response_is_complete(self):
        # What Starlette does: it sends its own 500, then re-raises.
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"Internal Server Error"})
            raise RuntimeError("after")

        resp = self.handler(app)(request())
        self.assertEqual((resp.status, resp.body), (500, b"Internal Server Error"))
        self.assertIn("raised after its response was complete; answering that response", self.log.text)
        self.assertIn("RuntimeError: after", self.log.text)

    def test_protocol_errors(self):
        async def no_start(scope, receive, send):
            pass

        async def no_end(scope, receive, send):
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 200})
                await send({"type": "http.response.body", "body": b"x", "more_body": True})

        async def body_first(scope, receive, send):
            if scope["type"] == "http":
                await send({"type": "http.response.body", "body": b"x"})

        async def start_twice(scope, receive, send):
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 200})
                await send({"type": "http.response.start", "status": 200})

        async def websocket_message(scope, receive, send):
            if scope["type"] == "http":
                await send({"type": "websocket.accept"})

        for app, words in ((no_start, "returned without sending 'http.response.start'"),
                           (no_end, "returned before its last 'http.response.body'"),
                           (body_first, "'http.response.body' before 'http.response.start'"),
                           (start_twice, "'http.response.start' twice"),
                           (websocket_message, "'websocket.accept' message on an http scope")):
            self.assertInternalError(self.handler(app)(request()), words)

    def test_keeps_serving_after_errors(self):
        calls = []

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            calls.append(1)
            if len(calls) == 1:
                raise ValueError("first")
            await respond()(scope, receive, send)

        h = self.handler(app)
        self.assertEqual(h(request()).status, 500)
        self.assertEqual(h(request()).body, b"ok")

    def test_contextvars_do_not_leak_between_requests(self):
        import contextvars

        var = contextvars.ContextVar("v", default="unset")
        seen = []

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            seen.append(var.get())
            var.set(scope["path"])
            await respond()(scope, receive, send)

        h = self.handler(app)
        h(request("GET", "/one"))
        h(request("GET", "/two"))
        self.assertEqual(seen, ["unset", "unset"])


class TestASGILifespan(ASGICase):
    def lifespan_app(self, events, startup=None, shutdown=None):
        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    events.append(message["type"])
                    if message["type"] == "lifespan.startup":
                        if startup is not None:
                            await startup(scope, send)
                        else:
                            scope["state"]["db"] = "connected"
                            await send({"type": "lifespan.startup.complete"})
                    else:
                        if shutdown is not None:
                            await shutdown(scope, send)
                        else:
                            await send({"type": "lifespan.shutdown.complete"})
                        return
            events.append(("request", dict(scope["state"])))
            scope["state"]["added"] = True  # a request's copy: not seen by the next one
            await respond()(scope, receive, send)

        return app

    def test_startup_before_serving_and_its_state_in_requests(self):
        events = []
        h = self.handler(self.lifespan_app(events))
        self.assertEqual(events, ["lifespan.startup"])  # done by the constructor
        h(request())
        h(request())
        self.assertEqual(events[1:], [("request", {"db": "connected"}), ("request", {"db": "connected"})])
        h.close()
        self.assertEqual(events[-1], "lifespan.shutdown")
        self.assertEqual(self.log.lines, [])

    def test_startup_failed_carries_the_apps_message(self):
        async def fail(scope, send):
            await send({"type": "lifespan.startup.failed", "message": "no database at db:5432"})

        with self.assertRaises(LifespanStartupFailed) as cm:
            ASGIHandler(self.lifespan_app([], startup=fail), log=Logged())
        self.assertEqual(str(cm.exception), "no database at db:5432")

        async def fail_silently(scope, send):
            await send({"type": "lifespan.startup.failed"})

        with self.assertRaises(LifespanStartupFailed) as cm:
            ASGIHandler(self.lifespan_app([], startup=fail_silently), log=Logged())
        self.assertIn("the app gave no message", str(cm.exception))

    def test_app_without_lifespan_support(self):
        async def raises(scope, receive, send):
            assert scope["type"] == "http", "only http"
            await respond()(scope, receive, send)

        h = self.handler(raises)
        self.assertIn("does not support the lifespan protocol (it raised AssertionError: only http)", self.log.text)
        self.assertEqual(h(request()).body, b"ok")
        h.close()  # no shutdown to run

        h = self.handler(respond())  # returns at once on the lifespan scope
        self.assertIn("it returned without answering lifespan.startup", self.log.text)
        self.assertEqual(h(request()).body, b"ok")

    def test_shutdown_failure(self):
        async def shutdown(scope, send):
            await send({"type": "lifespan.shutdown.failed", "message": "could not flush"})

        h = ASGIHandler(self.lifespan_app([], shutdown=shutdown), log=Logged())
        with self.assertRaises(LifespanShutdownFailed) as cm:
            h.close()
        self.assertEqual(str(cm.exception), "could not flush")

        async def shutdown_raises(scope, send):
            raise OSError("disk gone")

        h = ASGIHandler(self.lifespan_app([], shutdown=shutdown_raises), log=Logged())
        with self.assertRaises(LifespanShutdownFailed) as cm:
            h.close()
        self.assertIn("OSError: disk gone", str(cm.exception))

    def test_no_thread_left_by_startup_or_construction(self):
        # A snapshot template must be single-threaded at FROZEN: the executor's threads and
        # anyio-style workers the startup used have ended before the constructor returns.
        started = []

        async def startup(scope, send):
            loop = asyncio.get_running_loop()
            started.append(await loop.run_in_executor(None, threading.current_thread))
            await send({"type": "lifespan.startup.complete"})

        baseline = settled_thread_count()
        h = self.handler(self.lifespan_app([], startup=startup))
        self.assertTrue(started[0].name.startswith("asyncio-startup"))
        self.assertEqual(_thread._count(), baseline)
        self.assertEqual(h(request()).body, b"ok")
        self.assertEqual(_thread._count(), baseline)  # concurrency 1: the loop runs on this thread

        async def uses_executor(scope, receive, send):  # after READY the app may use it
            if scope["type"] == "http":
                await asyncio.get_running_loop().run_in_executor(None, sum, [1])
            await respond()(scope, receive, send)

        self.assertEqual(self.handler(uses_executor)(request()).body, b"ok")

    def test_a_thread_the_startup_leaves_running_is_named(self):
        stop = threading.Event()
        self.addCleanup(stop.set)

        async def startup(scope, send):
            threading.Thread(target=stop.wait, name="metrics-exporter", daemon=True).start()
            await send({"type": "lifespan.startup.complete"})

        self.handler(self.lifespan_app([], startup=startup))
        self.assertIn("1 thread(s) started during the ASGI app's lifespan startup still run (metrics-exporter)", self.log.text)


class TestASGIConcurrency(ASGICase):
    def test_requests_in_flight_together_on_one_loop(self):
        gates = {}

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            me, other = ("a", "b") if scope["path"] == "/a" else ("b", "a")
            gates.setdefault(me, asyncio.Event()).set()
            # Each waits for the other: only two requests in flight at once get through.
            await asyncio.wait_for(gates.setdefault(other, asyncio.Event()).wait(), 5)
            await respond(body=me.encode())(scope, receive, send)

        baseline = settled_thread_count()
        h = self.handler(app, concurrency=2)
        self.assertEqual(_thread._count(), baseline)  # the loop thread starts with the first request
        results = {}
        workers = [threading.Thread(target=lambda p=p: results.__setitem__(p, h(request("GET", p)))) for p in ("/a", "/b")]
        for w in workers:
            w.start()
        for w in workers:
            w.join(10)
        self.assertEqual({p: r.body for p, r in results.items()}, {"/a": b"a", "/b": b"b"})
        self.assertEqual(_thread._count(), baseline + 1)
        h.close()
        self.assertEqual(_thread._count(), baseline)


class TestASGIFork(ASGICase):
    """snapshot: fork: copies forked from one handler serve side by side."""

    def test_forked_copies_each_wake_their_own_loop(self):
        # Each request ends with a thread handing its result back to the loop (what FastAPI's
        # sync endpoints do): a copy sharing the template's wake-up pair would lose some.
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0)
            await respond()(scope, receive, send)

        for concurrency in (1, 2):
            h = self.handler(app, concurrency=concurrency)
            children = []
            for _ in range(3):
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        code = 0 if all(h(request()).body == b"ok" for _ in range(300)) else 3
                    finally:
                        os._exit(code)
                children.append(pid)
            deadline = time.monotonic() + 30
            codes = {}
            while len(codes) < len(children) and time.monotonic() < deadline:
                for pid in children:
                    if pid not in codes:
                        done, status = os.waitpid(pid, os.WNOHANG)
                        if done:
                            codes[pid] = os.waitstatus_to_exitcode(status)
                time.sleep(0.01)
            for pid in children:
                if pid not in codes:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
            self.assertEqual(sorted(codes.values()), [0, 0, 0], f"concurrency {concurrency}: a copy hung or failed")
            self.assertEqual(h(request()).body, b"ok")  # and the parent's loop still works


class TestCheckApp(unittest.TestCase):
    def test_the_wrong_kind_is_named(self):
        def wsgi_app(environ, start_response):
            return []

        class Flaskish:
            def __call__(self, environ, start_response):
                return []

        def asgi2(scope):
            return None

        async def asgi3(scope, receive, send):
            pass

        for app, words in ((wsgi_app, "looks like a WSGI app"), (Flaskish(), "looks like a WSGI app"),
                           (asgi2, "looks like an ASGI 2 app"), (42, "it is int, not an ASGI app"),
                           (None, "it is NoneType, not an ASGI app")):
            with self.assertRaises(TypeError) as cm:
                ASGIHandler(app, log=Logged())
            self.assertIn(words, str(cm.exception))
        for app in (asgi3, "text"):
            with self.assertRaises(TypeError) as cm:
                WSGIHandler(app)
            self.assertIn("an ASGI app, not a WSGI app" if app is asgi3 else "not a WSGI app (not callable)", str(cm.exception))

    def test_callables_that_may_be_apps_pass(self):
        import functools

        async def asgi3(scope, receive, send, extra=None):
            await respond()(scope, receive, send)

        class Instance:
            async def __call__(self, scope, receive, send):
                await respond()(scope, receive, send)

        for app in (asgi3, Instance(), functools.partial(asgi3, extra=1), lambda *a: asgi3(*a)):
            with ASGIHandler(app, log=Logged()) as h:
                self.assertEqual(h(request()).body, b"ok")


# --------------------------------------------------------------------------- WSGI


class WSGICase(unittest.TestCase):
    def handler(self, app, **kw):
        self.log = Logged()
        return WSGIHandler(app, log=self.log, **kw)

    assertInternalError = ASGICase.assertInternalError


def simple(status="200 OK", headers=(("Content-Type", "text/plain"),), body=(b"ok",)):
    def app(environ, start_response):
        start_response(status, list(headers))
        return list(body)

    return app


class TestWSGIEnviron(WSGICase):
    def test_environ_is_exact(self):
        seen = {}

        def app(environ, start_response):
            seen.update(environ)
            seen["body"] = environ["wsgi.input"].read()
            start_response("200 OK", [])
            return []

        errors = io.StringIO()
        h = self.handler(app, errors=errors)
        headers = [("Host", "example.com:8080"), ("X-Rep", "1"), ("x-rep", "2"), ("Cookie", "a=1"), ("cookie", "b=2"),
                   ("Content-Type", "application/json"), ("Content-Length", "3"), ("X_Smuggled", "1"), ("Accept", "*/*")]
        h(request("POST", "/a%20b/caf%C3%A9?x=1&y=%20", headers, b"abc"))
        body = seen.pop("body")
        wsgi_input = seen.pop("wsgi.input")
        self.assertEqual(seen, {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": "/a b/caf\u00c3\u00a9",  # the bytes of the UTF-8 path, as latin-1 (PEP 3333)
            "QUERY_STRING": "x=1&y=%20",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": "3",
            "SERVER_NAME": "example.com",
            "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "example.com:8080",
            "HTTP_X_REP": "1, 2",
            "HTTP_COOKIE": "a=1; b=2",
            "HTTP_ACCEPT": "*/*",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": errors,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        })
        self.assertEqual(body, b"abc")
        self.assertIsInstance(wsgi_input, io.BytesIO)

    def test_server_name_and_port(self):
        seen = {}

        def app(environ, start_response):
            seen.update(environ)
            return simple()(environ, start_response)

        h = self.handler(app, port="9000")
        for host, name, port in (("a.example", "a.example", "80"), ("a.example:81", "a.example", "81"),
                                 ("[::1]:8080", "[::1]", "8080"), ("[::1]", "[::1]", "80"), (None, "localhost", "9000")):
            h(request("GET", "/", [] if host is None else [("Host", host)]))
            self.assertEqual((seen["SERVER_NAME"], seen["SERVER_PORT"]), (name, port), host)

    def test_body_length_and_chunked_requests(self):
        seen = {}

        def app(environ, start_response):
            seen.clear()
            seen.update(environ)
            seen["read"] = environ["wsgi.input"].read()
            return simple()(environ, start_response)

        h = self.handler(app)
        h(request("GET", "/"))
        self.assertNotIn("CONTENT_LENGTH", seen)
        self.assertEqual(seen["read"], b"")
        # A chunked request reaches the handler whole, with no Content-Length of its own.
        h(request("POST", "/", [("Transfer-Encoding", "chunked")], b"12345"))
        self.assertEqual((seen["CONTENT_LENGTH"], seen["read"], seen["HTTP_TRANSFER_ENCODING"]), ("5", b"12345", "chunked"))
        self.assertEqual(self.handler(app, concurrency=4).environ(request())["wsgi.multithread"], True)

    def test_non_ascii_query(self):
        env = self.handler(simple()).environ(request("GET", "/?q=caf\u00e9"))
        self.assertEqual(env["QUERY_STRING"], "q=caf\u00c3\u00a9")


class TestWSGIResponses(WSGICase):
    def test_status_headers_body_exact(self):
        headers = [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Latin", "caf\u00e9")]
        for status in ("200 OK", "201 Created", "204 No Content", "404 Not Found", "599 Custom", "302"):
            resp = self.handler(simple(status, headers, [b"a", b"", bytearray(b"b")]))(request())
            self.assertEqual(resp.status, int(status[:3]))
            self.assertEqual(resp.headers, [(b"Content-Type", b"text/plain"), (b"Set-Cookie", b"a=1"),
                                            (b"Set-Cookie", b"b=2"), (b"X-Latin", b"caf\xe9")])
            self.assertEqual(resp.body, b"ab")

    def test_write_and_generators(self):
        def app(environ, start_response):
            write = start_response("200 OK", [])
            write(b"written ")
            yield b"then "
            yield b"yielded"

        self.assertEqual(self.handler(app)(request()).body, b"written then yielded")

        def late_start(environ, start_response):  # start_response may come with the first chunk
            def body():
                start_response("202 Accepted", [])
                yield b"late"

            return body()

        resp = self.handler(late_start)(request())
        self.assertEqual((resp.status, resp.body), (202, b"late"))

    def test_close_is_called(self):
        closed = []

        class Result:
            def __init__(self, chunks, fail=False):
                self.chunks, self.fail = chunks, fail

            def __iter__(self):
                for c in self.chunks:
                    if c is None:
                        raise RuntimeError("broken iterator")
                    yield c

            def close(self):
                closed.append(self.chunks)
                if self.fail:
                    raise OSError("close failed")

        def app_for(result):
            def app(environ, start_response):
                start_response("200 OK", [])
                return result

            return app

        self.assertEqual(self.handler(app_for(Result([b"a"])))(request()).body, b"a")
        self.assertInternalError(self.handler(app_for(Result([b"a", None])))(request()), "RuntimeError: broken iterator")
        resp = self.handler(app_for(Result([b"whole"], fail=True)))(request())
        self.assertEqual((resp.status, resp.body), (200, b"whole"))
        self.assertIn("close() failed after a complete body; answering it", self.log.text)
        self.assertEqual(len(closed), 3)

    def test_exc_info(self):
        def replaced(environ, start_response):
            start_response("200 OK", [("X-First", "1")])
            try:
                raise ValueError("while rendering")
            except ValueError:
                start_response("500 Internal Server Error", [("X-Second", "2")], sys.exc_info())
            return [b"error page"]

        resp = self.handler(replaced)(request())
        self.assertEqual((resp.status, resp.headers, resp.body), (500, [(b"X-Second", b"2")], b"error page"))

        def too_late(environ, start_response):
            write = start_response("200 OK", [])
            write(b"already sent")
            try:
                raise ValueError("too late")
            except ValueError:
                start_response("500 Internal Server Error", [], sys.exc_info())
            return []

        self.assertInternalError(self.handler(too_late)(request()), "ValueError: too late")

        def twice(environ, start_response):
            start_response("200 OK", [])
            start_response("200 OK", [])
            return []

        self.assertInternalError(self.handler(twice)(request()), "start_response() called a second time without exc_info")

    def test_errors(self):
        def raises(environ, start_response):
            raise KeyError("secret")

        def no_start(environ, start_response):
            return [b"body"]

        def no_start_empty(environ, start_response):
            return []

        cases = [
            (raises, "WSGI app failed", "KeyError: 'secret'"),
            (no_start, "produced its body before calling start_response()"),
            (no_start_empty, "returned without calling start_response()"),
            (simple("101 Switching Protocols"), "status 101"),
            (simple("600 Nope"), "status 600"),
            (simple("99 Low"), "the status '99 Low'"),
            (simple("OK"), "the status 'OK'"),
            (simple("200OK"), "the status '200OK'"),
            (simple(b"200 OK"), "the status b'200 OK'"),
            (simple(headers=[(b"X", b"1")]), "PEP 3333 header names and values are str"),
            (simple(headers=[("X", "\u2603")]), "which is not latin-1"),
            (simple(headers=[("X", "a\r\nInjected: 1")]), "control character"),
            (simple(headers=[("Bad Name", "1")]), "invalid response header name"),
            (simple(headers=[("X",)]), "invalid response header"),
            (simple(body=["text"]), "body chunk of type str"),
        ]
        for app, *words in cases:
            resp = self.handler(app)(request("GET", "/w"))
            self.assertInternalError(resp, "request 7 GET /w:", "answering 500", *words)


if __name__ == "__main__":
    unittest.main()
