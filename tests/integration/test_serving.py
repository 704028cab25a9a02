"""Serving: answers of sdk and process functions through the real gateway."""

import http.client
import os
import shutil
import threading
import time
import unittest

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness

from_repo = os.path.join(harness.REPO, "examples", "process-hello", "handler.py")


FD_HANDLER = """
import os
FDS = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        FDS[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass  # the descriptor of the listing itself

import http.server
import json
import socket


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps(FDS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["AETHER_LISTEN_PORT"])), Handler)
control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
control.connect(os.environ["AETHER_SOCKET"])
control.sendall(b"READY\\n")
server.serve_forever()
"""


# A handler runtime from before the response bell: it takes ATTACH's last descriptor as its
# region, closes the others, answers plain ATTACHED and wakes the orchestrator through ring 1's
# futex (a Ring without a bell). It must be served unchanged (docs/handler-protocol.md).
FUTEX_HANDLER = f"""#!{harness.PYTHON}
import os
import socket
import sys

sys.path.insert(0, {harness.SDK_DIR!r})
from aetherless import protocol, ring

if os.environ.get("AETHER_CONTROL_FD"):
    s = socket.socket(fileno=int(os.environ["AETHER_CONTROL_FD"]))
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["AETHER_SOCKET"])
s.sendall(b"READY\\n")
buf, passed = b"", []
while b"\\n" not in buf:
    chunk, fds, _, _ = socket.recv_fds(s, 4096, 4)
    passed += fds
    if not chunk:
        sys.exit(2)
    buf += chunk
line = buf.split(b"\\n", 1)[0].decode()
region = ring.Region(line[len("ATTACH "):], fd=passed.pop())
for fd in passed:
    os.close(fd)
s.sendall(b"ATTACHED\\n")
requests, responses = region.ring(0), region.ring(1)
while True:
    request = protocol.decode_request(requests.read())
    body = b"futex " + request.target
    responses.write(protocol.encode_response(request.request_id, 200, [(b"content-type", b"text/plain")], body))
"""


class ServingTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_common_handler()

    def start_one(self, **extra):
        fn = self.function("svc", **extra)
        self.start(self.write_config([fn]))
        return fn

    def test_json_answer_with_query(self):
        fn = self.start_one()
        r = self.get(fn["trigger_port"], "/json?name=bob&x=a+b&x=2&e=%C3%A9")
        self.assertStatus(r, 200, "GET /json")
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r)
        self.assertEqual(r.instance, "0", r)
        doc = r.json()
        self.assertEqual(doc["method"], "GET")
        self.assertEqual(doc["path"], "/json")
        self.assertEqual(doc["query"], {"name": "bob", "x": "a b", "e": "\u00e9"})
        self.assertEqual(doc["function"], fn["id"])

    def test_keep_alive_50_requests_one_connection(self):
        fn = self.start_one()
        conn = http.client.HTTPConnection("127.0.0.1", fn["trigger_port"], timeout=10)
        try:
            conn.connect()
            first = conn.sock
            for i in range(50):
                conn.request("GET", f"/json?i={i}")
                r = harness.read_response(conn)
                self.assertStatus(r, 200, f"request {i}")
                self.assertEqual(r.json()["query"], {"i": str(i)})
                self.assertFalse(r.will_close, f"request {i} answered with a close: {r}")
                self.assertIs(conn.sock, first, f"the connection was reopened before request {i + 1}")
        finally:
            conn.close()

    def test_post_body_echo(self):
        fn = self.start_one()
        conn = http.client.HTTPConnection("127.0.0.1", fn["trigger_port"], timeout=20)
        try:
            for size in (0, 1, 1000, 65536, 900 * 1024):
                body = os.urandom(size)
                conn.request("POST", "/echo", body=body, headers={"Content-Type": "application/octet-stream"})
                r = harness.read_response(conn)
                self.assertStatus(r, 200, f"POST {size} bytes")
                self.assertEqual(len(r.body), size, f"echo of {size} bytes came back with {len(r.body)}")
                self.assertTrue(r.body == body, f"echo of {size} bytes differs")
                self.assertEqual(r.headers.get("content-length"), str(size))
        finally:
            conn.close()

    def test_headers_reach_handler_case_insensitively(self):
        fn = self.start_one()
        r = self.get(fn["trigger_port"], "/headers", headers={"X-Test-Header": "Value-1"})
        self.assertStatus(r, 200, "GET /headers")
        doc = r.json()
        self.assertEqual(doc["lower"], "Value-1")
        self.assertEqual(doc["upper"], "Value-1")
        self.assertTrue(doc["mixed_in"])
        self.assertIn("X-Test-Header", doc["names"], "header names should arrive as sent")

    def test_custom_status_and_headers(self):
        fn = self.start_one()
        conn = http.client.HTTPConnection("127.0.0.1", fn["trigger_port"], timeout=10)
        try:
            conn.request("GET", "/custom")
            r = harness.read_response(conn)
            self.assertStatus(r, 201, "GET /custom")
            self.assertEqual(r.headers.get("x-custom"), "abc")
            self.assertEqual(r.headers.get("content-type"), "text/x-custom")
            self.assertEqual(r.body, b"made")
            # The handler's own Content-Length: 999 is dropped; the orchestrator's is right.
            self.assertEqual(r.headers.get("content-length"), "4")
            self.assertEqual([k for k, _ in r.header_list if k.lower() == "content-length"], ["content-length"])
            # And the connection is still usable.
            conn.request("GET", "/json")
            self.assertStatus(harness.read_response(conn), 200, "request after /custom")
        finally:
            conn.close()

    def test_http10_request_closes(self):
        fn = self.start_one()
        data = harness.raw_exchange(fn["trigger_port"], b"GET /json?v=10 HTTP/1.0\r\nHost: x\r\n\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.0 200"), data)
        self.assertIn(b'"v":"10"', body)

    def test_concurrent_requests_two_instances(self):
        fn = self.start_one(max_instances=2, concurrency=2)
        port = fn["trigger_port"]
        results = [None] * 20
        barrier = threading.Barrier(20)

        def worker(i):
            try:
                barrier.wait(5)
                results[i] = self.get(port, "/sleep?s=0.2", timeout=20)
            except Exception as e:  # noqa: BLE001
                results[i] = e

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
        begin = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - begin
        bad = [r for r in results if not isinstance(r, harness.Response) or r.status != 200]
        self.assertEqual(bad, [], f"not all 200{self.logs_of()}")
        used = sorted({r.instance for r in results})
        # The queue made it start a second instance (max_instances 2), and no more.
        instances = self.instances(fn["id"])
        self.assertEqual(len(instances), 2, f"instances {instances}; served by {used} in {elapsed:.2f} s")
        self.assertLessEqual(set(used), {"0", "1"})

    def test_python_setting_picks_the_interpreter(self):
        self.write_file("which.py", "import sys\nimport aetherless\n\n\n@aetherless.handler\n"
                        "def handle(req):\n    return {'executable': sys.executable}\n")
        fn = self.function("which", "which.py", snapshot=True)
        self.start(self.write_config([fn], orchestrator={"python": "/usr/bin/python3", "restore_timeout_ms": 100}))
        r = self.get(fn["trigger_port"], "/")
        self.assertStatus(r, 200, "python: /usr/bin/python3")
        self.assertEqual(r.json()["executable"], "/usr/bin/python3")

    def test_handlers_read_the_ring_in_c_and_ring_py_still_serves(self):
        # scripts/build-python-ext.sh built the ring's C half beside the SDK: a handler started
        # from a snapshot (criu restores the mapped module) and a cold one both use it, and a
        # function that asks for ring.py by its environment is served the same.
        self.write_file("ring.py", "import aetherless\nimport aetherless.ring\n\n\n@aetherless.handler\n"
                        "def handle(req):\n    return {'ring': aetherless.ring.IMPLEMENTATION, 'echo': req.query}\n")
        restored = self.function("ringsnap", "ring.py", snapshot=True)
        cold = self.function("ringcold", "ring.py", snapshot=False)
        pure = self.function("ringpure", "ring.py", snapshot=True, environment={"AETHERLESS_RING": "python"})
        self.start(self.write_config([restored, cold, pure], orchestrator={"restore_timeout_ms": 100}))
        for fn, expected in [(restored, "c"), (cold, "c"), (pure, "python")]:
            for i in range(3):
                r = self.get(fn["trigger_port"], f"/?i={i}")
                self.assertStatus(r, 200, fn["id"])
                self.assertEqual(r.json(), {"ring": expected, "echo": {"i": str(i)}}, fn["id"])
        logs = self.aether("logs", restored["id"]).stdout
        self.assertNotIn("the ring runs in pure Python", logs)

    def test_a_runtime_from_before_the_bell_still_serves(self):
        # Its instances are read by a thread asleep on the futex instead of the event loop.
        self.write_file("futex-handler", FUTEX_HANDLER, executable=True)
        fn = self.function("futex", "futex-handler", max_instances=2)
        self.start(self.write_config([fn]))
        for i in range(20):
            r = self.get(fn["trigger_port"], f"/n{i}")
            self.assertStatus(r, 200, "futex handler")
            self.assertEqual(r.body, f"futex /n{i}".encode())
        results = {}

        def fetch(i):
            results[i] = self.get(fn["trigger_port"], f"/c{i}")

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for i in range(16):
            self.assertStatus(results[i], 200, f"concurrent request {i}")
            self.assertEqual(results[i].body, f"futex /c{i}".encode())

    def test_process_protocol_function(self):
        shutil.copy(from_repo, os.path.join(self.tmp, "process.py"))
        fn = self.function("proc", "process.py", protocol="process")
        self.start(self.write_config([fn]))
        r = self.get(fn["trigger_port"], "/some/path?q=1")
        self.assertStatus(r, 200, "process function")
        self.assertEqual(r.json(), {"function": fn["id"], "path": "/some/path?q=1"})
        listed = self.status()["functions"]
        self.assertEqual([f["protocol"] for f in listed], ["process"])

    def test_swift_sdk_function(self):
        # The Swift SDK example, as built by `swift build` next to the aether binary.
        binary = os.path.join(os.path.dirname(harness.AETHER_BIN), "hello-swift")
        self.assertTrue(os.access(binary, os.X_OK), f"{binary} not built (swift build --product hello-swift)")
        fn = self.function("swift", binary, max_instances=1)
        self.start(self.write_config([fn]))
        conn = http.client.HTTPConnection("127.0.0.1", fn["trigger_port"], timeout=5)
        try:
            for name, expected in [("a", "a"), ("b%20c", "b c"), ("%C3%A9", "\u00e9")]:
                conn.request("GET", f"/hi?name={name}")
                r = harness.read_response(conn)
                self.assertStatus(r, 200, "swift function")
                self.assertEqual(r.json(), {"hello": expected, "runtime": "swift"})
                self.assertEqual(r.instance, "0")
        finally:
            conn.close()
        [function] = self.status()["functions"]
        self.assertEqual(function["stats"]["invocations"], 3)

    def test_handler_inherits_only_stdio(self):
        # A process handler records its open file descriptors before it opens anything itself:
        # the orchestrator's sockets (control API, handler sockets, trigger listeners, client
        # connections) and epoll descriptors must not leak into handler processes.
        self.write_file("fds.py", FD_HANDLER)
        sdk = self.function("sdkfd")  # started first, so its sockets exist when fds.py starts
        fn = self.function("fds", "fds.py", protocol="process")
        self.start(self.write_config([sdk, fn]))
        r = self.get(fn["trigger_port"], "/")
        self.assertStatus(r, 200, "fd report")
        fds = r.json()
        extra = {fd: target for fd, target in fds.items() if int(fd) > 2}
        if extra:
            self.fail(f"file descriptors inherited from the orchestrator: {extra}")

    def test_print_output_in_logs(self):
        fn = self.start_one()
        token = f"hello-from-handler-{os.getpid()}-{self.test_number}"
        r = self.get(fn["trigger_port"], f"/print?msg={token}")
        self.assertStatus(r, 200, "GET /print")

        def logged():
            out = self.aether("logs", fn["id"]).stdout
            return out if token in out else None

        out = harness.wait_until(logged, 5.0, 0.1)
        self.assertIsNotNone(out, f"{token} not in `aether logs`: {self.aether('logs', fn['id']).stdout!r}")
        self.assertIn(f"[0 stdout] {token}", out)


if __name__ == "__main__":
    unittest.main()
