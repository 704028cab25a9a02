"""End-to-end tests of `python3 -m aetherless HANDLER.py` (aetherless/runtime.py).

Each test plays the orchestrator of docs/handler-protocol.md: it listens on a Unix
socket, creates the shared-memory region, starts the runtime as a real process,
does the READY / ATTACH / ATTACHED conversation (ATTACH passes the region and the
response bell, a real eventfd), writes request messages on ring 0 and reads response
messages from ring 1, waiting for them on the bell as the orchestrator's event loop
does (tools/ring_peer.py's BellReader: a runtime that futex-woke instead would time
out).  No mocks.

    cd sdk/python && python3 -m unittest discover -s tests -v
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, SDK)
sys.path.insert(0, os.path.join(SDK, "tools"))

from aetherless.protocol import decode_response, encode_request  # noqa: E402
from aetherless.ring import Region, RingTimeout, _fence, unlink_shm  # noqa: E402
from ring_peer import BellReader  # noqa: E402

CAPACITY = 65536 * 4  # max_payload 131064
_counter = itertools.count()

HANDLER = r'''
import os, sys, time
import aetherless
from sibling import GREETING          # the handler's folder is on sys.path

STARTED = time.time()

@aetherless.handler
def handle(req):
    p = req.path
    if p == "/json":
        return {"hello": req.query.get("name", GREETING), "method": req.method,
                "agent": req.headers.get("user-agent"), "path": p, "raw_path": req.raw_path}
    if p == "/text":
        return "plain \u00e9"
    if p == "/bytes":
        return b"\x00\x01\x02"
    if p == "/none":
        return None
    if p == "/custom":
        return aetherless.Response(201, [("X-Custom", "yes"), ("Set-Cookie", "a=1"),
                                         ("Set-Cookie", "b=2")], "created")
    if p == "/echo":
        return aetherless.Response(200, {"Content-Type": req.headers.get("content-type", "x/y")}, req.body)
    if p == "/boom":
        raise RuntimeError("kaboom")
    if p == "/teapot":
        raise aetherless.HTTPError(418, "short and stout")
    if p == "/parse":
        return {"got": req.json()}
    if p == "/print":
        print("printed", req.query["n"])
        return "ok"
    if p == "/big":
        return b"x" * int(req.query["n"])
    if p == "/sleep":
        time.sleep(float(req.query["s"]))
        return {"slept": req.query["s"]}
    if p == "/env":
        return {"id": os.environ.get("AETHER_FUNCTION_ID"), "instance": os.environ.get("AETHER_INSTANCE"),
                "argv": sys.argv, "module": __name__}
    raise aetherless.HTTPError(404, "no route " + p)
'''


def write_corrupt_record(ring, payload: bytes) -> None:
    """Publish one record whose crc32 is wrong, as a (buggy) producer would."""
    cap = ring.capacity
    head = ring.head
    off = head % cap
    n = len(payload)
    rec = 8 + ((n + 7) & ~7)
    assert off + rec <= cap and cap - (head - ring.tail) >= rec
    mm = ring._mm
    p = ring._data + off
    mm[p + 8 : p + 8 + n] = payload
    struct.pack_into("<II", mm, p, n, zlib.crc32(payload) ^ 0xDEAD)
    ring._head.value = head + rec
    ring._wake_consumer()


class RuntimeCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="aetherless-rt-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.proc = None
        self.conn = None
        self._buf = b""

    # -- orchestrator side

    def start(self, source=HANDLER, concurrency=1, env=None, drop_env=(), handshake=True, region=True,
              python_args=("-m", "aetherless")):
        handler = os.path.join(self.tmp, "handler.py")
        with open(handler, "w") as f:
            f.write(textwrap.dedent(source))
        with open(os.path.join(self.tmp, "sibling.py"), "w") as f:
            f.write("GREETING = 'world'\n")
        self.sock_path = os.path.join(self.tmp, "ctl.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(self.listener.close)
        self.listener.bind(self.sock_path)
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.name = f"/aetherless-pytest-{os.getpid()}-{next(_counter)}"
        if region:
            self.region = Region.create(self.name, CAPACITY)
            self.addCleanup(unlink_shm, self.name, True)
            self.addCleanup(self.region.close)
            self.req_ring = self.region.ring(0)
            self.resp_ring = self.region.ring(1)
        self.out_path = os.path.join(self.tmp, "stdout")
        self.err_path = os.path.join(self.tmp, "stderr")
        e = dict(os.environ)
        e.update(
            PYTHONPATH=SDK,
            AETHER_SOCKET=self.sock_path,
            AETHER_FUNCTION_ID="pytest",
            AETHER_TRIGGER_PORT="18080",
            AETHER_PROTOCOL="sdk",
            AETHER_INSTANCE="3",
            AETHER_CONCURRENCY=str(concurrency),
        )
        e.update(env or {})
        for k in drop_env:
            e.pop(k, None)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *python_args, handler, "ignored-arg"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=e, cwd=self.tmp,
            )
        self.addCleanup(self._stop)
        if handshake:
            self.accept()
            self.assertEqual(self.line(), b"READY")
            self.attach_instance()

    def new_bell(self) -> int:
        """An eventfd as the orchestrator makes a response bell (its NIO sets O_NONBLOCK)."""
        bell = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.addCleanup(os.close, bell)
        return bell

    def attach(self, conn, name, region_fd=None) -> int:
        """Sends ATTACH as the orchestrator does: a new response bell and the region (its
        /dev/shm file unless ``region_fd``) by SCM_RIGHTS, in that order; returns the bell."""
        bell = self.new_bell()
        fd = os.open("/dev/shm" + name, os.O_RDWR | os.O_CLOEXEC) if region_fd is None else region_fd
        try:
            socket.send_fds(conn, [f"ATTACH {name}\n".encode()], [bell, fd])
        finally:
            os.close(fd)
        return bell

    def attach_instance(self, region_fd=None):
        """ATTACH on the control connection, ATTACHED back; responses are read by the bell."""
        self.bell = self.attach(self.conn, self.name, region_fd)
        self.responses = BellReader(self.resp_ring, self.bell)
        self.assertEqual(self.line(), b"ATTACHED bell")

    def assert_rings_the_bell(self, req_ring, resp_ring, bell, rid, target):
        """With the orchestrator asleep on ``bell`` (consumer_sleeping 1, fence, ring empty),
        request ``rid``'s response writes the bell once and leaves data_seq as it was."""
        seq = resp_ring._data_seq.value
        resp_ring._consumer_sleeping.value = 1
        _fence()
        self.assertIsNone(resp_ring.try_read())
        req_ring.write(encode_request(rid, "GET", target), timeout=5)
        self.assertTrue(select.select([bell], [], [], 5)[0], f"no bell for request {rid}; stderr:\n{self.stderr()}")
        self.assertEqual(struct.unpack("=Q", os.read(bell, 8)), (1,))
        resp_ring._consumer_sleeping.value = 0
        m = decode_response(resp_ring.try_read())  # published before the bell rang
        self.assertEqual((m.request_id, m.status), (rid, 200))
        self.assertEqual(resp_ring._data_seq.value, seq)

    def stop_previous(self):
        """Before a second start() in one test: the first runtime and its socket are gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if hasattr(self, "listener"):
            self.listener.close()
            os.unlink(self.sock_path)

    def _stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.conn is not None:
            self.conn.close()

    def accept(self):
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(10)

    def line(self) -> bytes:
        while b"\n" not in self._buf:
            chunk = self.conn.recv(4096)
            if not chunk:
                raise AssertionError(f"control socket closed; stderr:\n{self.stderr()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def stderr(self) -> str:
        with open(self.err_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stdout(self) -> str:
        with open(self.out_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_for(self, read, text, timeout=3.0):
        deadline = time.monotonic() + timeout
        while text not in read():
            if time.monotonic() > deadline:
                self.fail(f"{text!r} did not appear within {timeout}s in {read()!r}")
            time.sleep(0.01)

    def send(self, rid, target, method="GET", headers=(), body=b""):
        self.req_ring.write(encode_request(rid, method, target, headers, body), timeout=5)

    def recv(self, timeout=5.0):
        try:
            return decode_response(self.responses.read(timeout))
        except RingTimeout:
            raise AssertionError(f"no response within {timeout}s; stderr:\n{self.stderr()}") from None

    def call(self, rid, target, **kw):
        self.send(rid, target, **kw)
        m = self.recv()
        self.assertEqual(m.request_id, rid)
        return m

    def assertJSON(self, m, status, obj):
        self.assertEqual(m.status, status, m)
        self.assertIn((b"Content-Type", b"application/json"), m.headers)
        self.assertEqual(json.loads(m.body), obj)


class TestServing(RuntimeCase):
    def test_a_runtime_without_the_rings_c_half_says_so_and_serves(self):
        # The package alone (as a pip-installed wheel has it): ring.py serves, and stderr says why.
        package = os.path.join(self.tmp, "package-only")
        shutil.copytree(os.path.join(SDK, "aetherless"), os.path.join(package, "aetherless"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        self.start(env={"PYTHONPATH": package}, drop_env=("AETHERLESS_RING",))
        self.assertJSON(self.call(1, "/json"), 200, {"hello": "world", "method": "GET", "agent": None, "path": "/json", "raw_path": "/json"})
        self.assertIn("the ring runs in pure Python (about 7 us more per request): _aetherless_cring cannot be imported", self.stderr())

    def test_a_runtime_beside_a_stale_c_half_says_so_and_serves(self):
        # A module built from an older cring.c (no ABI: its Core takes no bell) is not used.
        package = os.path.join(self.tmp, "package-and-stale-module")
        shutil.copytree(os.path.join(SDK, "aetherless"), os.path.join(package, "aetherless"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        with open(os.path.join(package, "_aetherless_cring.py"), "w") as f:
            f.write("class Core:\n    pass\n\ndef bind_errors(*classes):\n    pass\n")
        self.start(env={"PYTHONPATH": package}, drop_env=("AETHERLESS_RING",))
        self.assertEqual(self.call(1, "/text").status, 200)
        self.assertIn("the ring runs in pure Python (about 7 us more per request): ", self.stderr())
        self.assertIn("was built from an older sdk/python/ext/cring.c (ABI 1, this ring.py needs 2): rebuild it "
                      "with scripts/build-python-ext.sh", self.stderr())

    def test_a_runtime_with_the_rings_c_half_says_nothing_about_it(self):
        self.start(drop_env=("AETHERLESS_RING",))
        self.assertJSON(self.call(1, "/json"), 200, {"hello": "world", "method": "GET", "agent": None, "path": "/json", "raw_path": "/json"})
        self.assertNotIn("pure Python", self.stderr())

    def test_results(self):
        self.start()
        m = self.call(1, "/json?name=x%20y", headers=[("User-Agent", "pytest/1")])
        self.assertJSON(m, 200, {"hello": "x y", "method": "GET", "agent": "pytest/1", "path": "/json", "raw_path": "/json"})
        self.assertEqual(m.headers, [(b"Content-Type", b"application/json")])
        self.assertJSON(self.call(2, "/json"), 200, {"hello": "world", "method": "GET", "agent": None, "path": "/json", "raw_path": "/json"})

        m = self.call(3, "/text")
        self.assertEqual((m.status, m.headers, m.body), (200, [(b"Content-Type", b"text/plain; charset=utf-8")], "plain \u00e9".encode()))
        m = self.call(4, "/bytes")
        self.assertEqual((m.status, m.headers, m.body), (200, [(b"Content-Type", b"application/octet-stream")], b"\x00\x01\x02"))
        m = self.call(5, "/none")
        self.assertEqual((m.status, m.headers, m.body), (204, [], b""))
        m = self.call(6, "/custom")
        self.assertEqual(m.status, 201)
        self.assertEqual(
            m.headers,
            [(b"X-Custom", b"yes"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"),
             (b"Content-Type", b"text/plain; charset=utf-8")],
        )
        self.assertEqual(m.body, b"created")
        body = bytes(range(256)) * 400  # 100 KiB, close to max_payload
        m = self.call(7, "/echo", method="POST", headers=[("content-type", "a/b")], body=body)
        self.assertEqual((m.status, m.headers, m.body), (200, [(b"Content-Type", b"a/b")], body))
        m = self.call(2**64 - 1, "/env")
        self.assertJSON(m, 200, {"id": "pytest", "instance": "3", "argv": [os.path.join(self.tmp, "handler.py"), "ignored-arg"], "module": "__aether_handler__"})
        self.assertJSON(self.call(8, "/nowhere"), 404, {"error": "no route /nowhere"})

    def test_exception_then_next_request_served(self):
        self.start()
        self.assertJSON(self.call(1, "/boom"), 500, {"error": "internal error"})
        self.assertJSON(self.call(2, "/json?name=again"), 200,
                        {"hello": "again", "method": "GET", "agent": None, "path": "/json", "raw_path": "/json"})
        self.wait_for(self.stderr, "RuntimeError: kaboom")
        err = self.stderr()
        self.assertIn("Traceback", err)
        self.assertIn("request 1 GET /boom", err)
        self.assertNotIn("kaboom", self.call(4, "/boom").body.decode())

    def test_http_error_and_invalid_json(self):
        self.start()
        self.assertJSON(self.call(1, "/teapot"), 418, {"error": "short and stout"})
        m = self.call(2, "/parse", method="POST", body=b"{not json")
        self.assertEqual(m.status, 400)
        self.assertTrue(json.loads(m.body)["error"].startswith("invalid JSON body: "))
        self.assertJSON(self.call(3, "/parse", method="POST", body=b'{"a":[1]}'), 200, {"got": {"a": [1]}})
        self.assertNotIn("Traceback", self.stderr())

    def test_print_reaches_stdout_promptly(self):
        self.start()
        self.assertEqual(self.call(1, "/print?n=1").body, b"ok")
        self.wait_for(self.stdout, "printed 1\n", timeout=2)
        self.assertEqual(self.call(2, "/print?n=2").body, b"ok")
        self.wait_for(self.stdout, "printed 2\n", timeout=2)
        self.assertIsNone(self.proc.poll())

    def test_response_too_large(self):
        self.start()
        m = self.call(1, "/big?n=200000")
        self.assertEqual(m.status, 500)
        text = json.loads(m.body)["error"]
        self.assertRegex(text, r"response of 2000\d\d bytes does not fit the ring's max_payload of 131064 bytes")
        self.assertEqual(len(self.call(2, "/big?n=100000").body), 100000)
        self.wait_for(self.stderr, "max_payload of 131064")

    def test_malformed_messages_and_corrupted_records(self):
        self.start()
        self.req_ring.write(b"\x01\x01\x00\x00short", timeout=5)  # < 16 bytes: logged, dropped
        good = encode_request(77, "GET", "/json", [("Host", "a")])
        self.req_ring.write(good[:-1], timeout=5)  # truncated, id readable: 400
        m = self.recv()
        self.assertEqual((m.request_id, m.status), (77, 400))
        self.assertIn("malformed request message", json.loads(m.body)["error"])
        self.req_ring.write(b"\x02" + good[1:], timeout=5)  # wrong kind: 400
        self.assertEqual(self.recv().status, 400)
        write_corrupt_record(self.req_ring, encode_request(78, "GET", "/json"))  # bad crc32: skipped
        self.assertEqual(self.call(79, "/text").status, 200)
        err = self.stderr()
        self.assertIn("no request id", err)
        self.assertIn("request 77: malformed request message", err)
        self.assertIn("corrupted data", err)
        self.assertNotIn("request 78", err)

    def test_extra_control_lines_are_ignored(self):
        self.start()
        self.conn.sendall(b"PING\nSOMETHING ELSE\n" + b"x" * 10000 + b"\n")
        time.sleep(0.05)
        self.assertEqual(self.call(1, "/text").status, 200)
        self.assertIsNone(self.proc.poll())

    def test_concurrency_out_of_order(self):
        self.start(concurrency=4)
        self.assertEqual(self.call(100, "/text").status, 200)  # warm
        sleeps = {1: "0.35", 2: "0.3", 3: "0.25", 4: "0.2"}
        t0 = time.monotonic()
        for rid, s in sleeps.items():
            self.send(rid, f"/sleep?s={s}")
        got = [self.recv(2) for _ in sleeps]
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 0.6)
        for m in got:
            self.assertJSON(m, 200, {"slept": sleeps[m.request_id]})
        order = [m.request_id for m in got]
        self.assertEqual(sorted(order), [1, 2, 3, 4])
        self.assertEqual(order[0], 4, order)  # shortest sleep answered first
        self.assertEqual(order[-1], 1, order)

    def test_inline_when_concurrency_is_one(self):
        self.start(concurrency=1)
        t0 = time.monotonic()
        for rid in (1, 2):
            self.send(rid, "/sleep?s=0.1")
        self.assertEqual([self.recv(2).request_id for _ in range(2)], [1, 2])
        self.assertGreaterEqual(time.monotonic() - t0, 0.2)


# What the orchestrator runs (HandlerLaunch.pythonRuntimeCommand in Sources/AetherOrchestrator).
ORCHESTRATOR_COMMAND = ("-c", "import sys, aetherless.runtime as r; sys.exit(r.main())")

# Modules that each put 0.1-1 MB into every snapshot image (and so into every restore): the
# runtime must serve JSON bodies, %-escaped queries and JSON responses without them.
HEAVY_MODULES = {"json", "json.decoder", "re", "enum", "functools", "collections", "contextlib",
                 "urllib.parse", "importlib.util", "signal", "typing", "inspect", "traceback",
                 "runpy", "threading", "socket", "random", "asyncio"}

FOOTPRINT_HANDLER = r'''
import sys
import aetherless

@aetherless.handler
def handle(req):
    return {"got": req.json(), "q": req.query, "path": req.path, "modules": sorted(sys.modules)}
'''


class TestRegionDescriptor(RuntimeCase):
    def test_region_handed_over_with_attach(self):
        # What the orchestrator does (confined handlers have a /dev/shm of their own): the
        # region goes as a descriptor with ATTACH. Its name is removed first, so only the
        # descriptor can reach it.
        self.start(handshake=False)
        fd = os.open("/dev/shm" + self.name, os.O_RDWR)
        unlink_shm(self.name)
        self.accept()
        self.assertEqual(self.line(), b"READY")
        self.attach_instance(region_fd=fd)
        self.assertJSON(
            self.call(1, "/json"), 200,
            {"hello": "world", "method": "GET", "agent": None, "path": "/json", "raw_path": "/json"},
        )

    def attach_refused(self, make_fds, error: str):
        """ATTACH carrying the descriptors ``make_fds()`` opens is answered ``ERROR <error>``,
        logged, and the runtime exits 1."""
        self.start(handshake=False)
        fds = make_fds()
        self.accept()
        self.assertEqual(self.line(), b"READY")
        line = f"ATTACH {self.name}\n".encode()
        if fds:
            socket.send_fds(self.conn, [line], fds)
        else:
            self.conn.sendall(line)
        for fd in fds:
            os.close(fd)
        self.assertEqual(self.line(), b"ERROR " + error.encode())
        self.assertEqual(self.proc.wait(5), 1)
        self.assertIn(f"aetherless: control socket: {error}", self.stderr())

    def test_attach_with_the_region_alone_is_refused(self):
        # What an orchestrator from before the response bell sends.
        self.attach_refused(lambda: [os.open("/dev/shm" + self.name, os.O_RDWR)],
                            "ATTACH carried 1 descriptor; expected 2 (the response bell and the region)")

    def test_attach_without_descriptors_is_refused(self):
        self.attach_refused(lambda: [],
                            "ATTACH carried 0 descriptors; expected 2 (the response bell and the region)")

    def test_attach_with_three_descriptors_is_refused(self):
        # Which two are the bell and the region is not for the runtime to guess.
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.attach_refused(lambda: [os.eventfd(0, os.EFD_CLOEXEC), os.open("/dev/shm" + self.name, os.O_RDWR), w],
                            "ATTACH carried 3 descriptors; expected 2 (the response bell and the region)")

    def test_responses_ring_the_bell_not_the_futex(self):
        # With the orchestrator asleep (consumer_sleeping 1), each response writes the bell and
        # leaves ring 1's data_seq as it was: no futex wake-up. Inline and from worker threads.
        for concurrency in (1, 4):
            with self.subTest(concurrency=concurrency):
                if self.proc is not None:
                    self.stop_previous()
                self.start(concurrency=concurrency)
                ring = self.resp_ring
                for rid in range(1, 51):
                    self.assert_rings_the_bell(self.req_ring, ring, self.bell, rid, "/text")
                # Awake, the orchestrator is not rung at all.
                self.send(51, "/text")
                deadline = time.monotonic() + 5
                while (data := ring.try_read()) is None and time.monotonic() < deadline:
                    time.sleep(0.001)
                self.assertEqual(decode_response(data).request_id, 51)
                self.assertEqual(select.select([self.bell], [], [], 0.05)[0], [])

    def test_a_checkpointed_template_attaches_with_the_bell_its_attach_brings(self):
        # A criu-restored copy goes on from FROZEN and reads ATTACH (with the region and the
        # bell) on its new connection; here the template itself, on the same one. A descriptor
        # sent along with CHECKPOINT is closed before the checkpoint, never taken for the region.
        self.start(handshake=False)
        self.accept()
        self.assertEqual(self.line(), b"READY")
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        socket.send_fds(self.conn, [b"CHECKPOINT\n"], [w])
        os.close(w)
        self.assertEqual(self.line(), b"FROZEN", self.stderr())
        self.assertTrue(select.select([r], [], [], 5)[0])
        self.assertEqual(os.read(r, 1), b"")
        self.attach_instance()
        for rid in range(1, 21):
            self.assertEqual(self.call(rid, "/text").status, 200)


class TestSnapshotFootprint(RuntimeCase):
    def test_serving_imports_no_heavy_module(self):
        self.start(FOOTPRINT_HANDLER, python_args=ORCHESTRATOR_COMMAND)
        m = self.call(1, "/a%20b?name=%C3%A9x&n=1", method="POST", body=b'{"a": [1, 2.5, "\\u00e9"]}')
        self.assertEqual(m.status, 200, m.body)
        got = json.loads(m.body)
        self.assertEqual((got["got"], got["q"], got["path"]), ({"a": [1, 2.5, "\u00e9"]}, {"name": "\u00e9x", "n": "1"}, "/a b"))
        # Whatever the interpreter's own start-up loads (site-packages .pth hooks) is not ours.
        at_startup = subprocess.run([sys.executable, "-c", "import sys; print(*sys.modules)"],
                                    capture_output=True, text=True, check=True).stdout.split()
        self.assertEqual(sorted(HEAVY_MODULES & set(got["modules"]) - set(at_startup)), [])

    def test_invalid_json_still_gets_json_error_message(self):
        self.start(FOOTPRINT_HANDLER, python_args=ORCHESTRATOR_COMMAND)
        m = self.call(1, "/", method="POST", body=b"{not json")
        self.assertEqual(m.status, 400)
        self.assertEqual(json.loads(m.body)["error"],
                         "invalid JSON body: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)")


ASGI_APP = r"""
import os, sys
import aetherless

STATE = {"startup_ran": False}

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        if os.environ.get("FAIL_STARTUP"):
            await send({"type": "lifespan.startup.failed", "message": "no database at db:5432"})
            return
        # Runs before READY: the orchestrator's test below checks the marker is there by then.
        open(os.path.join(os.path.dirname(__file__), "started"), "w").close()
        STATE["startup_ran"] = True
        scope["state"]["pool"] = "ready"
        await send({"type": "lifespan.startup.complete"})
        await receive()
        return
    message = await receive()
    body = repr({"path": scope["path"], "query": scope["query_string"], "pool": scope["state"].get("pool"),
                 "body": message["body"], "method": scope["method"], "asyncio": "asyncio" in sys.modules}).encode()
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"text/plain"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]})
    await send({"type": "http.response.body", "body": body})

class api:
    app = app

def wsgi_app(environ, start_response):
    start_response("202 Accepted", [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    return [repr({"path": environ["PATH_INFO"], "query": environ["QUERY_STRING"], "multithread": environ["wsgi.multithread"],
                  "body": environ["wsgi.input"].read(), "asyncio": "asyncio" in sys.modules}).encode()]

NOT_AN_APP = 42

if os.environ.get("ALSO_HANDLER"):
    @aetherless.handler
    def handle(req):
        return "the handler"
"""


FORK_APP = r"""
import asyncio, os, time

async def app(scope, receive, send):
    loop = asyncio.get_running_loop()
    if scope["type"] == "lifespan":
        await receive()
        scope["state"]["template"] = await loop.run_in_executor(None, os.getpid)  # a thread, ended by READY
        await send({"type": "lifespan.startup.complete"})
        await receive()
        return
    await receive()
    # A thread hands the result back to the loop: each copy must wake its own.
    pid = await loop.run_in_executor(None, os.getpid)
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": f"{pid} {scope['state']['template']}".encode()})
"""


COUNTING_HANDLER = r"""
import aetherless

CALLS = [0]

@aetherless.handler
def handle(req):
    CALLS[0] += 1
    return {"calls": CALLS[0]}
"""


class TestApps(RuntimeCase):
    """AETHER_APP: the runtime serves an ASGI or WSGI app of the handler file."""

    def test_snapshot_fork_copies_of_an_asgi_app(self):
        # The template's lifespan startup used a thread, yet it is single-threaded at CHECKPOINT;
        # two copies forked from it (docs/handler-protocol.md, snapshot: fork) serve side by side.
        self.start(FORK_APP, env={"AETHER_APP": "asgi:app", "AETHER_INSTANCE": "template"}, handshake=False)
        self.freeze_template()
        copies = []
        for i in range(2):
            region, bell = self.fork_and_attach(f"{self.name}-copy{i}")
            copies.append((region.ring(0), BellReader(region.ring(1), bell)))
        pids = set()
        for rid in range(1, 201):
            for req_ring, _ in copies:
                req_ring.write(encode_request(rid, "GET", "/"), timeout=5)
            # Each copy read first in turn: the first read waits for its bell.
            for _, responses in (copies if rid % 2 else copies[::-1]):
                m = decode_response(responses.read(5))
                self.assertEqual((m.request_id, m.status), (rid, 200), m)
                pid, template = m.body.split()
                pids.add(pid)
                self.assertEqual(int(template), self.proc.pid)
        self.assertEqual(len(pids), 2)
        self.assertNotIn(str(self.proc.pid).encode(), pids)
        # Each copy rings the bell its own ATTACH brought (the template never had one), not the other's.
        for i, (req_ring, responses) in enumerate(copies):
            self.assert_rings_the_bell(req_ring, responses.ring, responses.bell, 1000 + i, "/")
            self.assertEqual(select.select([copies[1 - i][1].bell], [], [], 0)[0], [])

    def test_a_forked_copy_warms_up_without_calling_the_handler(self):
        # After ATTACHED a copy dispatches made-up requests through the SDK (runtime._warm_dispatch,
        # off the request path when it waits in the warm pool); the handler must not see them.
        self.start(COUNTING_HANDLER, handshake=False)
        self.freeze_template()
        region, bell = self.fork_and_attach(f"{self.name}-copy")
        responses = BellReader(region.ring(1), bell)
        for rid in (1, 2):
            region.ring(0).write(encode_request(rid, "GET", "/?n=1"), timeout=5)
            m = decode_response(responses.read(5))
            self.assertEqual((m.request_id, m.status, json.loads(m.body)), (rid, 200, {"calls": rid}))

    def freeze_template(self):
        """READY, then CHECKPOINT answered with FROZEN: the template waits for FORK."""
        self.accept()
        self.assertEqual(self.line(), b"READY")
        self.conn.sendall(b"CHECKPOINT\n")
        self.assertEqual(self.line(), b"FROZEN")

    def fork_and_attach(self, name: str) -> tuple[Region, int]:
        """FORK (a socketpair end and output pipes, as the orchestrator sends them), FORKED,
        then ATTACH to a new region `name` (with a bell of its own), ATTACHED; returns the
        copy's region and bell."""
        mine, theirs = socket.socketpair()
        self.addCleanup(mine.close)
        mine.settimeout(10)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        for fd in (out_r, err_r):
            self.addCleanup(os.close, fd)
        socket.send_fds(self.conn, [b"FORK\n"], [theirs.fileno(), out_w, err_w])
        theirs.close()
        os.close(out_w)
        os.close(err_w)
        self.assertEqual(mine.recv(64), b"FORKED\n")
        region = Region.create(name, CAPACITY)
        self.addCleanup(unlink_shm, name, True)
        self.addCleanup(region.close)
        bell = self.attach(mine, name)
        self.assertEqual(mine.recv(64), b"ATTACHED bell\n")
        return region, bell

    def start_app(self, setting, env=None, **kw):
        self.start(ASGI_APP, env={"AETHER_APP": setting, **(env or {})}, **kw)

    def test_asgi_app_with_lifespan_before_ready(self):
        self.start_app("asgi:app", handshake=False)
        self.accept()
        self.assertEqual(self.line(), b"READY")
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "started")))  # startup ran before READY
        self.attach_instance()
        m = self.call(1, "/a%20b?x=1", method="POST", body=b"\x00\xff")
        self.assertEqual(m.status, 201)
        self.assertEqual(m.headers, [(b"content-type", b"text/plain"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")])
        self.assertEqual(eval(m.body), {"path": "/a b", "query": b"x=1", "pool": "ready", "body": b"\x00\xff",
                                        "method": "POST", "asyncio": True})
        self.assertNotIn("Traceback", self.stderr())

    def test_dotted_attribute_and_concurrency(self):
        self.start_app("asgi:api.app", concurrency=4)
        for rid in range(1, 9):
            self.send(rid, f"/n{rid}")
        got = sorted((m.request_id, m.status) for m in (self.recv() for _ in range(8)))
        self.assertEqual(got, [(rid, 201) for rid in range(1, 9)])

    def test_wsgi_app(self):
        self.start_app("wsgi:wsgi_app", concurrency=2)
        m = self.call(1, "/caf%C3%A9?q=1", method="PUT", body=b"data")
        self.assertEqual(m.status, 202)
        self.assertEqual(m.headers, [(b"Content-Type", b"text/plain"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")])
        self.assertEqual(eval(m.body), {"path": "/caf\u00c3\u00a9", "query": "q=1", "multithread": True,
                                        "body": b"data", "asyncio": False})

    def test_the_app_setting_wins_over_a_registered_handler(self):
        self.start_app("asgi:app", env={"ALSO_HANDLER": "1"})
        self.assertEqual(self.call(1, "/").status, 201)
        self.assertIn("AETHER_APP=asgi:app (the function's asgi: setting) is served; the @aetherless.handler "
                      "handle of __aether_handler__ is not used", self.stderr())

    def test_startup_failure_exits_1_with_the_apps_message(self):
        self.start_app("asgi:app", env={"FAIL_STARTUP": "1"}, handshake=False, region=False)
        self.assertEqual(self.proc.wait(5), 1)
        err = self.stderr()
        self.assertIn("AETHER_APP=asgi:app (the function's asgi: setting): the ASGI app's lifespan startup failed", err)
        self.assertIn("no database at db:5432", err)

    def test_setting_errors_exit_2(self):
        handler = os.path.join(self.tmp, "handler.py")
        cases = [
            ("asgi:missing", f"AETHER_APP=asgi:missing (the function's asgi: setting): the handler file {handler} "
                             "has no attribute 'missing' (the handler file has no 'missing')"),
            ("asgi:api.nope", "has no attribute 'api.nope' (api has no 'nope')"),
            ("wsgi:NOT_AN_APP", f"NOT_AN_APP in the handler file {handler} cannot be served as a WSGI app: it is int, "
                                "not a WSGI app (not callable)"),
            ("asgi:wsgi_app", "cannot be served as an ASGI app: it looks like a WSGI app (it takes 2 arguments, "
                              "environ and start_response)"),
            ("wsgi:app", "cannot be served as a WSGI app: it is an async function: an ASGI app"),
            ("asgi", "AETHER_APP must be 'asgi:ATTRIBUTE' or 'wsgi:ATTRIBUTE'"),
            ("fastapi:app", "not 'fastapi:app'"),
            ("asgi:", "not 'asgi:'"),
            ("asgi:app()", "not 'asgi:app()'"),
        ]
        for setting, words in cases:
            with self.subTest(setting=setting):
                self.stop_previous()
                self.start_app(setting, handshake=False, region=False)
                self.assertEqual(self.proc.wait(5), 2, self.stderr())
                self.assertIn(words, self.stderr())


class TestLifecycle(RuntimeCase):
    def test_exit_when_control_socket_closes(self):
        self.start()
        self.assertEqual(self.call(1, "/text").status, 200)
        self.conn.close()
        self.conn = None
        self.assertEqual(self.proc.wait(2), 0)

    def test_exit_on_eof_while_a_handler_runs(self):
        self.start(concurrency=2)
        self.send(1, "/sleep?s=5")
        time.sleep(0.1)
        self.conn.close()
        self.conn = None
        self.assertEqual(self.proc.wait(2), 0)

    def test_sigterm(self):
        self.start()
        self.assertEqual(self.call(1, "/text").status, 200)
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(2), -signal.SIGTERM)

    def test_no_handler_exits_2(self):
        self.start("import aetherless\n\ndef handle(req):\n    return 'x'\n", handshake=False, region=False)
        self.assertEqual(self.proc.wait(5), 2)
        err = self.stderr()
        self.assertIn("registers no handler", err)
        self.assertIn("@aetherless.handler", err)

    def test_two_handlers_exit_2(self):
        src = "import aetherless\n@aetherless.handler\ndef a(req): pass\n@aetherless.handler\ndef b(req): pass\n"
        self.start(src, handshake=False, region=False)
        self.assertEqual(self.proc.wait(5), 2)
        self.assertIn("used twice", self.stderr())

    def test_import_failure_exits_1(self):
        self.start("import aetherless\nraise ImportError('no numpy here')\n", handshake=False, region=False)
        self.assertEqual(self.proc.wait(5), 1)
        err = self.stderr()
        self.assertIn("importing the handler file", err)
        self.assertIn("ImportError: no numpy here", err)

    def test_missing_socket_exits_2(self):
        self.start(drop_env=["AETHER_SOCKET"], handshake=False, region=False)
        self.assertEqual(self.proc.wait(5), 2)
        self.assertIn("AETHER_SOCKET is not set", self.stderr())

    def test_bad_concurrency_exits_2(self):
        self.start(env={"AETHER_CONCURRENCY": "zero"}, handshake=False, region=False)
        self.assertEqual(self.proc.wait(5), 2)
        self.assertIn("AETHER_CONCURRENCY", self.stderr())

    def test_unusable_region_error_line(self):
        # An empty memfd where the region should be (the bell beside it all right).
        self.start(handshake=False, region=False)
        self.accept()
        self.assertEqual(self.line(), b"READY")
        bell = self.new_bell()
        fd = os.memfd_create("not-a-region")
        socket.send_fds(self.conn, [f"ATTACH {self.name}\n".encode()], [bell, fd])
        os.close(fd)
        line = self.line()
        self.assertTrue(line.startswith(b"ERROR cannot attach shared-memory region " + self.name.encode()), line)
        self.assertIn(b"object size", line)
        self.assertEqual(self.proc.wait(5), 1)

    def test_unexpected_line_instead_of_attach(self):
        self.start(handshake=False, region=False)
        self.accept()
        self.assertEqual(self.line(), b"READY")
        self.conn.sendall(b"HELLO\n")
        self.assertTrue(self.line().startswith(b"ERROR expected 'ATTACH <region-name>'"))
        self.assertEqual(self.proc.wait(5), 1)


if __name__ == "__main__":
    unittest.main()
