"""Faults: gateway limits, handler crashes and timeouts, broken handlers, startup failures."""

import glob
import http.client
import json
import os
import signal
import socket
import threading
import time
import unittest

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness


ROGUE_HANDLER = f"""#!{harness.PYTHON}
# Speaks the handshake correctly, then answers its first request with garbage on ring 1.
import os
import signal
import socket
import sys
import time

sys.path.insert(0, {harness.SDK_DIR!r})
from aetherless import ring

if os.environ.get("AETHER_CONTROL_FD"):
    # The control connection comes already open (what the SDK runtime uses).
    s = socket.socket(fileno=int(os.environ["AETHER_CONTROL_FD"]))
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["AETHER_SOCKET"])
s.sendall(b"READY\\n")
buf = b""
passed = []
while b"\\n" not in buf:
    # ATTACH carries the region as a descriptor (SCM_RIGHTS, a memfd).
    chunk, fds, _, _ = socket.recv_fds(s, 4096, 4)
    passed += fds
    if not chunk:
        sys.exit(2)
    buf += chunk
line = buf.split(b"\\n", 1)[0].decode()
if not line.startswith("ATTACH "):
    sys.exit(3)
region = ring.Region(line[len("ATTACH "):], fd=passed[-1] if passed else None)
s.sendall(b"ATTACHED\\n")
request = region.ring(0).read()
print("rogue got a request of", len(request), "bytes", flush=True)
region.ring(1).write(b"\\x02\\x01garbage")
time.sleep(60)
"""

NEVER_READY_HANDLER = """
import time
time.sleep(60)
"""

BOOM_HANDLER = """
import sys
sys.stderr.write("boom\\n")
sys.stderr.flush()
sys.exit(3)
"""

HELLO_HANDLER = """
import os
import signal
import socket
import time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(os.environ["AETHER_SOCKET"])
s.sendall(b"HELLO\\n")
time.sleep(60)
"""


class GatewayFaultsTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_common_handler()

    def start_one(self, **extra):
        fn = self.function("flt", **extra)
        self.start(self.write_config([fn]))
        return fn

    def assertErrorBody(self, r):
        doc = r.json()
        self.assertIsInstance(doc.get("error"), str, r)
        self.assertTrue(doc["error"], r)

    def test_413_body_over_max_body_bytes(self):
        fn = self.start_one(max_body_bytes=1000)
        port = fn["trigger_port"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/echo", body=b"x" * 5000)
            r = harness.read_response(conn)
        finally:
            conn.close()
        self.assertStatus(r, 413, "5000-byte body with max_body_bytes 1000")
        self.assertErrorBody(r)
        self.assertTrue(r.will_close, f"413 should close the connection: {r}")
        # Within the limit still works.
        r = http_post(port, b"y" * 1000)
        self.assertStatus(r, 200, "1000-byte body")
        self.assertEqual(r.body, b"y" * 1000)

    def test_413_chunked_body_over_limit(self):
        fn = self.start_one(max_body_bytes=1000)
        chunk = b"z" * 1500
        data = (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n"
        )
        reply = harness.raw_exchange(fn["trigger_port"], data)
        self.assertTrue(reply.startswith(b"HTTP/1.1 413"), reply)

    def test_431_header_too_large(self):
        fn = self.start_one()
        r = self.get(fn["trigger_port"], "/json", headers={"X-Big": "a" * (20 * 1024)})
        self.assertStatus(r, 431, "20 KiB header")
        self.assertErrorBody(r)
        self.assertStatus(self.get(fn["trigger_port"], "/json"), 200, "after 431")

    def test_429_when_queue_full(self):
        fn = self.start_one(max_instances=1, concurrency=1, max_queue=1)
        port = fn["trigger_port"]
        results = [None] * 5
        barrier = threading.Barrier(5)

        def worker(i):
            try:
                barrier.wait(5)
                results[i] = self.get(port, "/sleep?s=1", timeout=20)
            except Exception as e:  # noqa: BLE001
                results[i] = e

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        errors = [r for r in results if not isinstance(r, harness.Response)]
        self.assertEqual(errors, [], "requests failed without an HTTP answer")
        statuses = sorted(r.status for r in results)
        self.assertTrue(set(statuses) <= {200, 429}, f"statuses {statuses}: {results}{self.logs_of()}")
        self.assertIn(429, statuses, f"statuses {statuses}")
        self.assertIn(200, statuses, f"statuses {statuses}")
        for r in results:
            if r.status == 429:
                self.assertIn("retry-after", r.headers, r)
                self.assertErrorBody(r)
        stats = self.stats(fn["id"])["stats"]
        self.assertEqual(stats["rejected"], statuses.count(429), stats)

    def test_504_timeout_then_new_instance(self):
        fn = self.start_one(timeout_ms=300)
        port = fn["trigger_port"]
        first = self.get(port, "/json")
        self.assertStatus(first, 200, "first request")
        old_pid = harness.instance_pid(first.json())
        self.assertIsNotNone(old_pid, first)
        begin = time.monotonic()
        r = self.get(port, "/sleep?s=5")
        elapsed = time.monotonic() - begin
        self.assertStatus(r, 504, "handler sleeping 5 s with timeout_ms 300")
        self.assertErrorBody(r)
        self.assertLess(elapsed, 3.0, "504 came too late")
        # The instance was killed and replaced; wait for the replacement (the next request's own
        # 300 ms budget includes its wait for an instance).
        self.wait_serving(fn["id"], exclude_pids={old_pid})
        r = self.get(port, "/json")
        self.assertStatus(r, 200, "request after the timeout")
        self.assertNotEqual(r.instance, first.instance, "should be served by a new instance")
        self.assertNotEqual(r.json()["token"], first.json()["token"])
        self.assertNotEqual(harness.instance_pid(r.json()), old_pid)
        stats = self.stats(fn["id"])["stats"]
        self.assertEqual(stats["timeouts"], 1, stats)
        self.assertEqual(stats["invocations"], 3, stats)

    def test_502_when_handler_exits_mid_request(self):
        fn = self.start_one()
        port = fn["trigger_port"]
        first = self.get(port, "/json")
        self.assertStatus(first, 200, "first")
        old_pid = harness.instance_pid(first.json())
        self.assertIsNotNone(old_pid, first)
        r = self.get(port, "/exit")
        self.assertStatus(r, 502, "handler calling os._exit(1)")
        self.assertErrorBody(r)
        self.wait_serving(fn["id"], exclude_pids={old_pid})
        r = self.get(port, "/json")
        self.assertStatus(r, 200, "recovery")
        self.assertNotEqual(r.json()["token"], first.json()["token"])
        self.assertNotEqual(harness.instance_pid(r.json()), old_pid)
        stats = self.stats(fn["id"])["stats"]
        self.assertGreaterEqual(stats["crashes"], 1, stats)

    def test_handler_exception_is_500_same_instance(self):
        fn = self.start_one()
        port = fn["trigger_port"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/raise")
            r = harness.read_response(conn)
            self.assertStatus(r, 500, "exception in the handler")
            self.assertEqual(r.json(), {"error": "internal error"})
            conn.request("GET", "/json")
            after = harness.read_response(conn)
        finally:
            conn.close()
        self.assertStatus(after, 200, "after the exception")
        self.assertEqual(after.instance, r.instance)
        [instance] = self.instances(fn["id"])
        self.assertEqual(instance["pid"], harness.instance_pid(after.json()))
        self.assertEqual(instance["number"], 0)
        stats = self.stats(fn["id"])["stats"]
        self.assertEqual(stats["crashes"], 0, stats)

        def traceback_logged():
            return "deliberate failure in the handler" in self.aether("logs", fn["id"]).stdout

        self.assertTrue(harness.wait_until(traceback_logged, 5.0, 0.1), "traceback not in aether logs")

    def test_malformed_http_is_400(self):
        fn = self.start_one()
        for request in (b"GARBAGE\r\n\r\n", b"GET /json HTTP/1.1\r\nHost: x\r\nX Bad: 1\r\n\r\n",
                        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"):
            reply = harness.raw_exchange(fn["trigger_port"], request)
            self.assertTrue(reply.startswith(b"HTTP/1.1 400"), reply)
            # Like every answer the orchestrator makes itself: JSON naming the cause.
            head, _, body = reply.partition(b"\r\n\r\n")
            self.assertIn(b"malformed HTTP request", json.loads(body)["error"].encode(), reply)
            self.assertIn(b"connection: close", head.lower(), reply)
        self.assertStatus(self.get(fn["trigger_port"], "/json"), 200, "after malformed request")

    def test_431_when_the_head_is_over_the_http_parsers_own_limits(self):
        fn = self.start_one()
        reply = harness.raw_exchange(
            fn["trigger_port"], b"GET /json HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 431"), reply[:200])
        self.assertIsInstance(json.loads(reply.partition(b"\r\n\r\n")[2])["error"], str)
        self.assertStatus(self.get(fn["trigger_port"], "/json"), 200, "after 431")

    def test_slow_and_idle_clients_are_cut_off(self):
        fn = self.function("slow")
        self.start(self.write_config([fn], orchestrator={"client_timeout_ms": 500}))
        port = fn["trigger_port"]
        # A head that never completes (slowloris): closed without an answer.
        began = time.monotonic()
        reply = harness.raw_exchange(port, b"GET /json HTTP/1.1\r\nHost: x\r\n", timeout=5)
        self.assertEqual(reply, b"")
        self.assertLess(time.monotonic() - began, 3.0)
        # A body that stops short of its Content-Length: 408.
        reply = harness.raw_exchange(
            port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", timeout=5)
        self.assertTrue(reply.startswith(b"HTTP/1.1 408"), reply)
        self.assertIn(b"client_timeout_ms 500", reply)
        # An idle keep-alive connection: closed after one answer and the timeout.
        reply = harness.raw_exchange(port, b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
        self.assertTrue(reply.startswith(b"HTTP/1.1 200"), reply)
        # Everyone else is still served.
        self.assertStatus(self.get(port, "/json"), 200, "after slow clients")

    def test_client_timeout_restarts_after_every_response(self):
        # The idle time is counted from the last response, not the first: a keep-alive
        # connection that asks every 200 ms lives on for as long as it asks (the gateway moves
        # its deadline lazily; a stale timer must not cut it off), and is closed once it stops.
        fn = self.function("steady")
        self.start(self.write_config([fn], orchestrator={"client_timeout_ms": 500}))
        port = fn["trigger_port"]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            began = time.monotonic()
            answered = 0
            while time.monotonic() - began < 2.0:
                connection.request("GET", "/json")
                response = connection.getresponse()
                response.read()
                self.assertEqual(response.status, 200, f"request {answered + 1} on one connection")
                answered += 1
                time.sleep(0.2)
            self.assertGreaterEqual(answered, 5)
            # Idle now: the connection is closed within the timeout (and a little).
            idle = time.monotonic()
            self.assertEqual(connection.sock.recv(1), b"", "the idle connection was not closed")
            self.assertLess(time.monotonic() - idle, 2.0)
        finally:
            connection.close()

    def test_unmapped_port_refused(self):
        fn = self.start_one()
        unused = self.free_port()
        with self.assertRaises(ConnectionRefusedError):
            self.get(unused, "/json", timeout=5)
        self.assertStatus(self.get(fn["trigger_port"], "/json"), 200, "configured port")

    def test_rogue_handler_garbage_response_is_502(self):
        self.write_file("rogue", ROGUE_HANDLER, executable=True)
        fn = self.function("rogue", "rogue")
        orch = self.start(self.write_config([fn]))
        port = fn["trigger_port"]
        r = self.get(port, "/json")
        self.assertStatus(r, 502, "garbage on the response ring")
        self.assertErrorBody(r)
        self.assertTrue(orch.alive(), orch.log())
        # The 502 is the orchestrator rejecting the garbage, not the rogue failing on its own.
        self.assertTrue(
            harness.wait_until(lambda: "rogue got a request" in self.aether("logs", fn["id"]).stdout, 5.0, 0.1),
            self.aether("logs", fn["id"]).stdout,
        )
        self.assertTrue(harness.wait_until(lambda: "malformed response" in orch.stderr(), 5.0), orch.log())
        self.aether("list")
        # The replacement is rogue too: the next request is answered (502), not hung.
        r = self.get(port, "/json", timeout=15)
        self.assertStatus(r, 502, "second request to the rogue function")
        self.assertTrue(orch.alive(), orch.log())
        self.aether("list")

    def test_orchestrator_killed_handlers_exit(self):
        # "When the connection reaches end-of-file (the orchestrator is gone), an SDK runtime
        # exits" -- and nothing of the rings outlives them: they are memfds handed over with
        # ATTACH (no name in /dev/shm a dead orchestrator could leave behind), released when
        # the last process holding one is gone.
        a = self.function("orpha", max_instances=2, concurrency=1)
        b = self.function("orphb")
        orch = self.start(self.write_config([a, b]))
        # Two requests at once on `a` so it runs two instances.
        threads = [threading.Thread(target=self.get, args=(a["trigger_port"], "/sleep?s=0.5")) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        pids = [i["pid"] for f in self.status()["functions"] for i in f["instances"]]
        self.assertGreaterEqual(len(pids), 3, self.status())
        self.assertEqual(harness.shm_regions(a["id"]) + harness.shm_regions(b["id"]), [],
                         "rings should be memfds, not names in /dev/shm")
        # Every instance holds its ring (and the orchestrator all of them).
        holders = set(harness.ring_holders(a["id"]) + harness.ring_holders(b["id"]))
        self.assertLessEqual(set(pids) | {orch.pid}, holders, "who holds the rings")
        os.kill(orch.pid, signal.SIGKILL)
        orch.wait_exit(5)
        gone = harness.wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), 5.0, 0.1)
        alive = [line for line in harness.processes_mentioning(self.tmp)]
        self.assertTrue(gone, f"handlers still running 5 s after the orchestrator was killed: {alive}")
        left = harness.wait_until(lambda: not (harness.ring_holders(a["id"]) + harness.ring_holders(b["id"])), 5.0, 0.1)
        self.assertTrue(left, f"rings still held: {harness.ring_holders(a['id']) + harness.ring_holders(b['id'])}")
        c = self.function("after")
        second = self.start(self.write_config([c], name="after.yaml"))
        self.assertEqual(harness.shm_regions(a["id"]) + harness.shm_regions(b["id"]) + harness.shm_regions(c["id"]),
                         [], second.log())
        self.assertStatus(self.get(c["trigger_port"], "/json"), 200, "the next orchestrator")


def http_post(port, body):
    return harness.http_request(port, "POST", "/echo", body=body)


class StartupFailureTest(harness.AetherTestCase):
    def assertCleanFailure(self, orch, fid, *needles):
        err = orch.stderr()
        self.assertIn("aether up:", err)
        for needle in needles:
            self.assertIn(needle, err, f"stderr should say {needle!r}\n{orch.log()}")
        self.assertNotIn("Fatal error", err, orch.log())
        self.assertEqual(harness.shm_regions(fid), [], "shared memory left behind")
        left = harness.wait_until(lambda: not harness.processes_mentioning(self.tmp), 3.0, 0.1)
        self.assertTrue(left, f"processes left: {harness.processes_mentioning(self.tmp)}")
        self.assertFalse(os.path.exists(self.control_socket), "control socket left behind")
        self.assertEqual(glob.glob(os.path.join(self.tmp, "fn-*.sock")), [], "handler sockets left behind")
        failure = [line for line in err.splitlines() if line.startswith("aether up:")]
        self.assertTrue(any(fid in line for line in failure), f"the error should name the function {fid}: {failure}")

    def test_never_ready(self):
        self.write_file("never.py", NEVER_READY_HANDLER)
        fn = self.function("never", "never.py", protocol="process", startup_timeout_ms=500)
        begin = time.monotonic()
        orch = self.start_expect_failure(self.write_config([fn]))
        self.assertLess(time.monotonic() - begin, 10)
        self.assertCleanFailure(orch, fn["id"], "READY")

    def test_never_ready_sdk(self):
        # An sdk module that never finishes importing: no READY either, and its region goes.
        self.write_file("never.py", NEVER_READY_HANDLER)
        fn = self.function("nevsdk", "never.py", startup_timeout_ms=500)
        orch = self.start_expect_failure(self.write_config([fn]))
        self.assertCleanFailure(orch, fn["id"], "READY")

    def test_exits_at_once(self):
        self.write_file("boom.py", BOOM_HANDLER)
        fn = self.function("boom", "boom.py", protocol="process")
        orch = self.start_expect_failure(self.write_config([fn]))
        self.assertCleanFailure(orch, fn["id"], "boom")

    def test_protocol_violation(self):
        self.write_file("hello.py", HELLO_HANDLER)
        fn = self.function("hello", "hello.py", protocol="process")
        orch = self.start_expect_failure(self.write_config([fn]))
        self.assertCleanFailure(orch, fn["id"], "broke the handler protocol", "HELLO")

    def test_trigger_port_in_use(self):
        self.write_common_handler()
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        ok = self.function("ok")
        fn = self.function("busy", trigger_port=port)
        orch = self.start_expect_failure(self.write_config([ok, fn]))
        self.assertCleanFailure(orch, fn["id"], "cannot listen", str(port))
        self.assertEqual(harness.shm_regions(ok["id"]), [])

    def test_second_up_on_same_socket(self):
        self.write_common_handler()
        fn = self.function("first")
        config = self.write_config([fn])
        first = self.start(config)
        second = self.start_expect_failure(config)
        self.assertIn("already running", second.stderr(), second.log())
        self.assertTrue(first.alive(), first.log())
        self.assertStatus(self.get(fn["trigger_port"], "/json"), 200, "first orchestrator after the second failed")
        self.assertTrue(os.path.exists(self.control_socket))
        listed = self.status()
        self.assertEqual(listed["pid"], first.pid)


if __name__ == "__main__":
    unittest.main()
