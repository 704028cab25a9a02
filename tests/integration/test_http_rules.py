"""HTTP's own rules on what handlers answer, and bounded resources per connection (issue 13).

Nothing a handler writes may crash or stall the orchestrator: a status that is not a final one,
or a header NIO would refuse, costs that instance (killed, replaced, counted) and the request a
502. Statuses and methods without content (204, 304, 205, HEAD) go out without a body, so the
next response on the connection still parses. A client that pipelines without reading, and a
flood of connections beyond the descriptor limit, cost bounded memory and no spinning.
"""

import json
import os
import shutil
import socket
import threading
import time
import unittest
from unittest import mock

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness


RULES_HANDLER = r'''
import json
import os
import time

import aetherless
''' + harness.IDENTITY_CODE + r'''


@aetherless.handler
def handle(req):
    path = req.path
    if path == "/status":
        headers = [("X-Test", "1")]
        if "length" in req.query:
            headers.append(("Content-Length", req.query["length"]))
        return aetherless.Response(int(req.query["code"]), headers, req.query.get("body", "x"))
    if path == "/pid":
        return {**_identity(), "method": req.method}
    if path == "/big":
        return b"y" * int(req.query.get("n", "65536"))
    if path == "/header":
        return aetherless.Response(200, [("X-Odd", "a" + chr(int(req.query["byte"])) + "b")], "x")
    if path == "/echo":
        return req.body
    if path == "/sleep":
        time.sleep(int(req.query["ms"]) / 1000)
        return "slept"
    raise aetherless.HTTPError(404, "no route " + path)
'''


def request(method: str, target: str, extra: str = "", close: bool = False) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return f"{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}{connection}\r\n".encode()


def parse_responses(data: bytes, methods: list[str]) -> list[tuple[int, dict, bytes]]:
    """Splits `data` into one response per request method, framed strictly by RFC 9112 §6.3
    (HEAD, 1xx, 204, 304: no body; otherwise Content-Length); fails on anything left over."""
    responses = []
    rest = data
    for method in methods:
        end = rest.find(b"\r\n\r\n")
        if end < 0:
            raise AssertionError(f"no complete response head for {method} in {rest!r} (all: {data!r})")
        lines = rest[:end].decode("latin-1").split("\r\n")
        version, code = lines[0].split(" ")[:2]
        if version != "HTTP/1.1":
            raise AssertionError(f"bad status line {lines[0]!r} in {data!r}")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        rest = rest[end + 4:]
        status = int(code)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            [length] = headers["content-length"]
            body, rest = rest[: int(length)], rest[int(length):]
        responses.append((status, headers, body))
    if rest:
        raise AssertionError(f"{len(rest)} bytes after the last expected response: {rest[:200]!r} (all: {data!r})")
    return responses


def receive_until(sock: socket.socket, done) -> bytes:
    """Reads from `sock` until `done(received)` holds; fails if the server closes first."""
    received = b""
    while not done(received):
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"the connection closed after {received!r}")
        received += chunk
    return received


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


class HTTPRulesTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_file("rules.py", RULES_HANDLER)
        self.write_common_handler()

    def start_pair(self, orchestrator=None, **extra):
        """A function with the rules handler and a bystander with the common one."""
        rules = self.function("rules", "rules.py", **extra)
        other = self.function("other")
        orch = self.start(self.write_config([rules, other], orchestrator=orchestrator))
        return orch, rules["trigger_port"], other["trigger_port"], rules["id"]

    def identity(self, port: int) -> dict:
        """Who answers GET /pid (harness.IDENTITY_CODE)."""
        r = self.get(port, "/pid", timeout=20)
        self.assertStatus(r, 200, "GET /pid")
        return r.json()

    def token(self, port: int) -> str:
        """Which handler process answers: confined, its pid is 1 in its own namespace, so the
        token it drew tells processes apart."""
        return self.identity(port)["token"]

    def test_interim_statuses_are_502_and_cost_the_instance(self):
        orch, port, other, fid = self.start_pair()
        for code in (100, 101, 102, 103, 199):
            before = self.identity(port)
            before_pid = harness.instance_pid(before)  # while it runs
            self.assertIsNotNone(before_pid, before)
            r = self.get(port, f"/status?code={code}&body=x", timeout=20)
            self.assertStatus(r, 502, f"handler answering {code}")
            self.assertIn(f"status {code}", r.json()["error"], r)
            self.assertTrue(orch.alive(), orch.log())
            self.assertStatus(self.get(other, "/json"), 200, f"the other function after {code}")
            # The instance was killed for it; the next request is served by a replacement.
            self.wait_serving(fid, timeout=20, exclude_pids={before_pid})
            self.assertNotEqual(self.token(port), before["token"], f"after {code}")
        stats = self.stats(fid)["stats"]
        self.assertGreaterEqual(stats["errors"], 5, stats)
        self.assertIn("not a final HTTP status", orch.stderr(), orch.log())
        # On the wire: a 502 head, never the interim one.
        reply = harness.raw_exchange(port, request("GET", "/status?code=103", close=True), timeout=20)
        [(status, headers, body)] = parse_responses(reply, ["GET"])
        self.assertEqual(status, 502, reply)
        self.assertIn(b"status 103", body)

    def test_no_content_statuses_carry_no_body(self):
        orch, port, _, fid = self.start_pair()
        before = self.token(port)
        for code in (204, 304, 205):
            data = request("GET", f"/status?code={code}&body=hello&length=5") + request("GET", "/pid", close=True)
            reply = harness.raw_exchange(port, data, timeout=20)
            (status, headers, body), (after, _, pid) = parse_responses(reply, ["GET", "GET"])
            self.assertEqual(status, code, reply)
            self.assertEqual(body, b"", reply)
            self.assertEqual(headers["x-test"], ["1"], reply)
            if code == 205:
                self.assertEqual(headers.get("content-length"), ["0"], reply)
            else:
                self.assertNotIn("content-length", headers, reply)
            self.assertNotIn("transfer-encoding", headers, reply)
            # The next response on the connection parses, from the same instance: not an error.
            self.assertEqual(after, 200, reply)
            self.assertEqual(json.loads(pid)["token"], before, reply)
        self.assertEqual(self.stats(fid)["stats"]["errors"], 0)
        self.assertTrue(orch.alive(), orch.log())

    def test_head_has_the_length_but_no_body(self):
        orch, port, _, _ = self.start_pair()
        data = (
            request("HEAD", "/big?n=1000")
            + request("HEAD", "/status?code=200&body=&length=4096")
            + request("HEAD", "/nothing-here")
            + request("GET", "/pid", close=True)
        )
        reply = harness.raw_exchange(port, data, timeout=20)
        big, declared, missing, last = parse_responses(reply, ["HEAD", "HEAD", "HEAD", "GET"])
        self.assertEqual((big[0], big[1]["content-length"]), (200, ["1000"]), reply)
        self.assertEqual((declared[0], declared[1]["content-length"]), (200, ["4096"]), reply)
        self.assertEqual(missing[0], 404, reply)
        self.assertGreater(int(missing[1]["content-length"][0]), 0, reply)
        self.assertEqual(last[0], 200, reply)
        self.assertEqual(json.loads(last[2])["method"], "GET")
        # The orchestrator's own answers follow the same rule: a 502 to HEAD has no body either.
        reply = harness.raw_exchange(
            port, request("HEAD", "/status?code=103") + request("GET", "/pid", close=True), timeout=20)
        rejected, after = parse_responses(reply, ["HEAD", "GET"])
        self.assertEqual(rejected[0], 502, reply)
        self.assertGreater(int(rejected[1]["content-length"][0]), 0, reply)
        self.assertEqual(after[0], 200, reply)
        self.assertTrue(orch.alive(), orch.log())

    def test_expect_100_continue(self):
        _, port, _, _ = self.start_pair(max_body_bytes=1000)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request("POST", "/echo", "Content-Length: 5\r\nExpect: 100-continue\r\n"))
            interim = receive_until(s, lambda received: b"\r\n\r\n" in received)
            self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
            s.sendall(b"hello")
            reply = receive_until(s, lambda received: received.endswith(b"hello"))
        [(status, _, body)] = parse_responses(reply, ["POST"])
        self.assertEqual((status, body), (200, b"hello"))
        # Over max_body_bytes: the final answer at once, no 100.
        reply = harness.raw_exchange(
            port, request("POST", "/echo", "Content-Length: 5000\r\nExpect: 100-continue\r\n"), timeout=10)
        self.assertTrue(reply.startswith(b"HTTP/1.1 413"), reply)

    def test_pipelined_requests_are_answered_in_order(self):
        # Requests sent without waiting are answered in the order they came, the gateway's own
        # refusals and a request it cannot parse in their turn, after a slow answer before them.
        orch, port, _, fid = self.start_pair(max_body_bytes=1000)
        before = self.token(port)
        reply = harness.raw_exchange(
            port,
            request("GET", "/sleep?ms=300") + request("GET", "/pid")
            + request("POST", "/echo", "Content-Length: 5\r\n") + b"hello"
            + request("POST", "/echo", "Content-Length: 5000\r\n"),
            timeout=20)
        slept, pid, echo, refused = parse_responses(reply, ["GET", "GET", "POST", "POST"])
        self.assertEqual((slept[0], slept[2]), (200, b"slept"), reply)
        self.assertEqual((pid[0], json.loads(pid[2])["token"]), (200, before), reply)
        self.assertEqual((echo[0], echo[2]), (200, b"hello"), reply)
        self.assertEqual(refused[0], 413, reply)
        self.assertEqual(refused[1]["connection"], ["close"], reply)
        # Garbage behind a slow request: its answer first, then 400, then the connection closes.
        reply = harness.raw_exchange(port, request("GET", "/sleep?ms=300") + b"NOT HTTP AT ALL\r\n\r\n", timeout=20)
        slept, malformed = parse_responses(reply, ["GET", "GET"])
        self.assertEqual((slept[0], slept[2]), (200, b"slept"), reply)
        self.assertEqual(malformed[0], 400, reply)
        self.assertIsInstance(json.loads(malformed[2])["error"], str)
        # A 100 Continue is sent only when its request is next: after the answer before it.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                request("GET", "/sleep?ms=300")
                + request("POST", "/echo", "Content-Length: 5\r\nExpect: 100-continue\r\n"))
            received = receive_until(s, lambda received: b"100 Continue\r\n\r\n" in received)
            first, interim = parse_responses(received, ["GET", "GET"])
            self.assertEqual((first[0], first[2], interim[0]), (200, b"slept", 100), received)
            s.sendall(b"hello")
            reply = receive_until(s, lambda received: received.endswith(b"hello"))
        [(status, _, body)] = parse_responses(reply, ["POST"])
        self.assertEqual((status, body), (200, b"hello"))
        self.assertEqual(self.stats(fid)["stats"]["errors"], 0)
        self.assertTrue(orch.alive(), orch.log())

    def test_connect_is_refused_by_the_gateway(self):
        orch, port, _, fid = self.start_pair()
        self.token(port)
        reply = harness.raw_exchange(port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        head, _, rest = reply.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 501"), reply)
        self.assertNotIn(b"content-length", head.lower(), reply)
        self.assertEqual(rest, b"", reply)
        self.assertEqual(self.stats(fid)["stats"]["invocations"], 1)
        self.assertEqual(self.token(port), self.token(port))
        self.assertTrue(orch.alive(), orch.log())

    def test_control_character_in_a_header_is_502(self):
        # NIO's header validator would drop the whole response and close the connection.
        orch, port, _, fid = self.start_pair()
        for byte in (0x01, 0x7F):
            before = self.identity(port)
            before_pid = harness.instance_pid(before)  # while it runs
            self.assertIsNotNone(before_pid, before)
            r = self.get(port, f"/header?byte={byte}", timeout=20)
            self.assertStatus(r, 502, f"header value with byte {byte:#x}")
            self.wait_serving(fid, timeout=20, exclude_pids={before_pid})
            self.assertNotEqual(self.token(port), before["token"])
        r = self.get(port, "/header?byte=9")  # a tab is valid
        self.assertStatus(r, 200, "header value with a tab")
        self.assertEqual(r.headers["x-odd"], "a\tb")
        self.assertTrue(orch.alive(), orch.log())

    def test_pipelining_without_reading_keeps_memory_bounded(self):
        orch, port, other, fid = self.start_pair(max_queue=100000)
        for _ in range(20):
            self.assertStatus(self.get(port, "/big?n=65536"), 200, "warm-up")
        baseline = rss_kib(orch.pid)
        one = request("GET", "/big?n=65536")
        stop = threading.Event()
        sent = [0]

        def flood(sock):
            try:
                while not stop.is_set() and sent[0] < 20000:
                    sock.sendall(one * 50)
                    sent[0] += 50
            except OSError:
                pass

        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        thread = threading.Thread(target=flood, args=(sock,), daemon=True)
        thread.start()
        peak = baseline
        try:
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                peak = max(peak, rss_kib(orch.pid))
                time.sleep(0.1)
            # Others are served meanwhile, the same function included.
            self.assertStatus(self.get(other, "/json"), 200, "other function during the flood")
            self.assertStatus(self.get(port, "/pid"), 200, "same function, another connection")
            peak = max(peak, rss_kib(orch.pid))
            invocations = self.stats(fid)["stats"]["invocations"]
        finally:
            stop.set()
            sock.close()
            thread.join(10)
        growth_mib = (peak - baseline) / 1024
        # Unbounded, the ~20000 answers of 64 KiB would be over a GiB.
        self.assertLess(growth_mib, 64, f"RSS grew {growth_mib:.1f} MiB ({invocations} invocations)")
        self.assertLess(invocations, 2000, f"{sent[0]} requests sent")
        self.assertTrue(orch.alive(), orch.log())
        self.assertStatus(self.get(port, "/pid"), 200, "after the flood")

    def test_descriptor_exhaustion(self):
        # `aether up` with a low hard limit, the soft one below it (raised to 256 at start).
        if shutil.which("prlimit") is None:
            self.skipTest("prlimit (util-linux) is not installed")
        rules = self.function("rules", "rules.py")
        other = self.function("other")
        config = self.write_config([rules, other], orchestrator={"client_timeout_ms": 60000})
        real = harness.aether_bin()
        wrapper = self.write_file(
            "aether-limited", f'#!/bin/sh\nexec prlimit --nofile=128:256 -- {real} "$@"\n', executable=True)
        with mock.patch.object(harness, "aether_bin", lambda: wrapper):
            orch = self.start(config)
        self.assertIn("soft 128 raised to the hard limit: soft 256, hard 256", orch.stderr(), orch.log())
        with open(f"/proc/{orch.pid}/limits") as f:
            [line] = [line for line in f if line.startswith("Max open files")]
        self.assertEqual(line.split()[3:5], ["256", "256"], line)
        port, other_port = rules["trigger_port"], other["trigger_port"]
        self.assertStatus(self.get(port, "/pid"), 200, "before the flood")
        # A keep-alive connection opened before the flood goes on being served during it.
        kept = harness.http.client.HTTPConnection("127.0.0.1", other_port, timeout=10)
        self.addCleanup(kept.close)
        kept.request("GET", "/json")
        self.assertStatus(harness.read_response(kept), 200, "kept connection before the flood")
        # Enough connections to use every descriptor left, and some to wait in the backlog.
        spare = 256 - len(os.listdir(f"/proc/{orch.pid}/fd"))
        flood = []
        try:
            for _ in range(spare + 60):
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            self.assertTrue(
                harness.wait_until(lambda: len(os.listdir(f"/proc/{orch.pid}/fd")) >= 255, 5.0),
                "the orchestrator did not run out of descriptors")
            # Out of descriptors, the listener pauses instead of retrying accept in a loop.
            before = cpu_ticks(orch.pid)
            time.sleep(2)
            used = (cpu_ticks(orch.pid) - before) / os.sysconf("SC_CLK_TCK") / 2
            self.assertLess(used, 0.3, f"the orchestrator used {used:.0%} of a CPU while out of descriptors")
            self.assertTrue(orch.alive(), orch.log())
            kept.request("GET", "/json")
            self.assertStatus(harness.read_response(kept), 200, "kept connection during the flood")
        finally:
            for s in flood:
                s.close()
        self.assertTrue(orch.alive(), orch.log())
        self.assertStatus(self.get(other_port, "/json", timeout=20), 200, "the other function after the flood")
        self.assertStatus(self.get(port, "/pid", timeout=20), 200, "the flooded function after the flood")
        self.assertIn("rules", json.dumps(self.status()))

if __name__ == "__main__":
    unittest.main()
