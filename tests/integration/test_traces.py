"""Traces (issue 18, item 3): with `otlp_endpoint` the orchestrator exports a trace of every
request over OTLP/HTTP: a server span from arrival to response and, inside it, `queue`, `start`
(when the request waited for an instance to be spawned, restored or forked) and `handler`. A
request sent with a `traceparent` stays in its caller's trace: the same trace id in the handler,
in `aether logs --request`, in the exported spans and in `x-request-id`.

The receiver is real: an HTTP server taking POST /v1/traces and decoding each body with the
official `opentelemetry-proto` package, run with the test virtualenv's python
(scripts/test-venv.sh, which scripts/test.sh names in AETHER_TEST_VENV_PYTHON)."""

import json
import os
import subprocess
import time
import unittest

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness

VENV_PYTHON = os.environ.get("AETHER_TEST_VENV_PYTHON", "")

# An OTLP/HTTP receiver: prints its port, then appends one JSON line per span it receives (and one
# per request it refuses, or that is not POST /v1/traces) to the file named by argv[1].
RECEIVER = r'''
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

out = open(sys.argv[1], "a", buffering=1)


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        content_type = self.headers.get("content-type")
        if self.path != "/v1/traces" or content_type != "application/x-protobuf":
            out.write(json.dumps({"refused": self.path, "content_type": content_type}) + "\n")
            self.send_response(415)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    out.write(json.dumps({
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                        "status": span.status.code,
                        "attributes": {a.key: value(a.value) for a in span.attributes},
                        "service": resource.get("service.name"),
                    }) + "\n")
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self):
        out.write(json.dumps({"refused": self.path, "method": "GET"}) + "\n")
        self.send_response(405)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
print(server.server_address[1], flush=True)
server.serve_forever()
'''

HANDLER = r'''
import aetherless


@aetherless.handler
def handle(req):
    aetherless.log("serving", req.path)
    return {"request_id": req.request_id, "traceparent": req.traceparent}
'''

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
PARENT = f"00-{TRACE}-{CALLER_SPAN}-01"

SPAN_KIND_INTERNAL = 1
SPAN_KIND_SERVER = 2


@unittest.skipUnless(
    VENV_PYTHON or os.environ.get("AETHER_REQUIRE_FRAMEWORKS"),
    "needs the test virtualenv with opentelemetry-proto (scripts/test-venv.sh; scripts/test.sh sets "
    "AETHER_TEST_VENV_PYTHON)",
)
class TracesTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.assertTrue(os.access(VENV_PYTHON, os.X_OK), f"AETHER_TEST_VENV_PYTHON={VENV_PYTHON!r}")
        self.write_file("traced.py", HANDLER)

    def start_receiver(self) -> str:
        """Starts the OTLP/HTTP receiver; returns its base URL (what `otlp_endpoint` names)."""
        self.received_path = os.path.join(self.tmp, "spans.jsonl")
        open(self.received_path, "w").close()
        script = self.write_file("receiver.py", RECEIVER)
        receiver = subprocess.Popen(
            [VENV_PYTHON, script, self.received_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

        def stop():
            receiver.kill()
            receiver.wait(timeout=10)
            receiver.stdout.close()
            receiver.stderr.close()

        self.addCleanup(stop)
        port = receiver.stdout.readline().strip()
        self.assertTrue(port.isdigit(), f"the receiver did not start: {receiver.stderr.read() if not port else port}")
        return f"http://127.0.0.1:{port}"

    def received(self) -> list[dict]:
        with open(self.received_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def spans_of(self, trace_id: str, count: int, timeout: float = 10.0) -> dict:
        """The spans of one trace by name, once `count` of them have arrived."""

        def arrived():
            spans = [s for s in self.received() if s.get("trace_id") == trace_id]
            return spans if len(spans) >= count else None

        spans = harness.wait_until(arrived, timeout, 0.1)
        self.assertTrue(spans, f"{count} spans of trace {trace_id} were not received: {self.received()}"
                        + self.logs_of())
        by_name = {s["name"]: s for s in spans}
        self.assertEqual(len(by_name), len(spans), f"one span of each name: {spans}")
        return by_name

    def assert_one_trace(self, spans: dict, server_name: str, caller_span: str | None, start_kind: str | None):
        server = spans[server_name]
        self.assertEqual(server["kind"], SPAN_KIND_SERVER, server)
        self.assertEqual(server["service"], "aetherless", server)
        self.assertEqual(server["parent_span_id"], caller_span or "", "the caller's span is the server span's parent")
        self.assertEqual(server["attributes"].get("http.response.status_code"), 200, server)
        self.assertEqual(server["attributes"].get("http.request.method"), "GET", server)
        children = {name: span for name, span in spans.items() if name != server_name}
        self.assertEqual(set(children), {"queue", "handler"} | ({"start"} if start_kind else set()), spans)
        for name, child in children.items():
            self.assertEqual(child["kind"], SPAN_KIND_INTERNAL, child)
            self.assertEqual(child["parent_span_id"], server["span_id"], f"{name} is a child of the server span")
        for name in ("queue", "handler"):
            self.assertGreaterEqual(spans[name]["start"], server["start"], name)
            self.assertLessEqual(spans[name]["end"], server["end"], name)
        self.assertLessEqual(spans["queue"]["end"], spans["handler"]["start"], "queue, then handler")
        if start_kind:
            start = spans["start"]
            self.assertEqual(start["attributes"].get("aether.start.kind"), start_kind, start)
            self.assertEqual(start["end"], spans["handler"]["start"], "the instance started, then served it")
            self.assertTrue(server["attributes"].get("faas.coldstart"), server)

    def test_a_traceparent_is_one_trace_from_caller_to_handler_to_exported_spans(self):
        endpoint = self.start_receiver()
        # Scaled to zero: the first request waits for its copy to be forked from the template.
        forked = self.function("forked", "traced.py", snapshot="fork", min_warm=0, max_instances=2)
        orch = self.start(self.write_config([forked], orchestrator={"otlp_endpoint": endpoint}))
        self.assertIn("exporting traces over OTLP/HTTP", orch.stderr())
        r = self.get(forked["trigger_port"], "/first", headers={"traceparent": PARENT})
        self.assertStatus(r, 200, "traced request")
        self.assertEqual(r.headers.get("x-aether-cold-start"), "fork", r)
        self.assertEqual(r.headers.get("x-request-id"), TRACE)
        body = r.json()
        self.assertEqual(body["request_id"], TRACE)
        spans = self.spans_of(TRACE, 4)
        server_name = f"GET {forked['id']}"
        self.assert_one_trace(spans, server_name, CALLER_SPAN, "fork")
        # The handler's traceparent names the server span: its own spans would be its children.
        self.assertEqual(body["traceparent"], f"00-{TRACE}-{spans[server_name]['span_id']}-01")
        self.assertEqual(spans[server_name]["attributes"].get("aether.request_id"), TRACE)
        self.assertEqual(spans[server_name]["attributes"].get("url.path"), "/first")

        # A warm instance: no start span. Without a traceparent: a new trace, rooted at the server
        # span, whose id is the request's.
        r = self.get(forked["trigger_port"], "/again")
        self.assertStatus(r, 200, "untraced request")
        self.assertEqual(r.headers.get("x-aether-cold-start"), "no", r)
        fresh = r.headers.get("x-request-id")
        self.assertRegex(fresh, r"^[0-9a-f]{32}$")
        self.assertEqual(r.json()["request_id"], fresh)
        spans = self.spans_of(fresh, 3)
        self.assert_one_trace(spans, server_name, None, None)
        self.assertEqual(r.json()["traceparent"], f"00-{fresh}-{spans[server_name]['span_id']}-01")

        # What the handler logged while serving the traced request.
        def logged():
            out = self.aether("logs", forked["id"], "--request", TRACE).stdout
            return out if "serving /first" in out else None

        out = harness.wait_until(logged, 5)
        self.assertTrue(out, self.aether("logs", forked["id"]).stdout)
        self.assertIn(f"request_id={TRACE} serving /first", out)
        self.assertNotIn("/again", out)
        self.assertFalse([s for s in self.received() if "refused" in s], self.received())

    def test_a_spawn_after_scale_to_zero_is_a_start_span(self):
        endpoint = self.start_receiver()
        fn = self.function("spawned", "traced.py", min_warm=0, idle_timeout_ms=300)
        self.start(self.write_config([fn], orchestrator={"otlp_endpoint": endpoint}))
        gone = harness.wait_until(lambda: self.instances(fn["id"]) == [], 5.0)
        self.assertTrue(gone, f"idle instance not stopped: {self.instances(fn['id'])}")
        r = self.get(fn["trigger_port"], "/cold", headers={"traceparent": PARENT})
        self.assertStatus(r, 200, "after scale to zero")
        self.assertEqual(r.headers.get("x-aether-cold-start"), "spawn", r)
        spans = self.spans_of(TRACE, 4)
        self.assert_one_trace(spans, f"GET {fn['id']}", CALLER_SPAN, "spawn")

    def test_without_otlp_endpoint_nothing_is_sent(self):
        endpoint = self.start_receiver()
        fn = self.function("quiet", "traced.py")
        orch = self.start(self.write_config([fn]))
        for _ in range(5):
            r = self.get(fn["trigger_port"], "/", headers={"traceparent": PARENT})
            self.assertStatus(r, 200, "untraced orchestrator")
            self.assertEqual(r.headers.get("x-request-id"), TRACE)
            self.assertEqual(r.json()["traceparent"], PARENT, "without tracing the caller's traceparent goes on as is")
        self.aether("down")
        self.assertEqual(orch.wait_exit(15), 0, orch.log())
        self.assertEqual(self.received(), [], f"nothing may reach {endpoint} without otlp_endpoint")
        self.assertNotIn("OTLP", orch.stderr())

    def test_a_dead_endpoint_does_not_break_serving(self):
        # Nothing listens there: every export fails; requests are served as before, the failure is
        # logged once (not per request, nor per batch), and `aether down` is not held up by it.
        dead = f"http://127.0.0.1:{self.free_port()}"
        fn = self.function("deadend", "traced.py")
        orch = self.start(self.write_config([fn], orchestrator={"otlp_endpoint": dead}))
        deadline = time.monotonic() + 3.0
        served = 0
        while time.monotonic() < deadline:
            r = self.get(fn["trigger_port"], "/", headers={"traceparent": PARENT})
            self.assertStatus(r, 200, "with a dead otlp_endpoint")
            self.assertEqual(r.headers.get("x-request-id"), TRACE)
            served += 1
            time.sleep(0.05)
        self.assertGreater(served, 20)
        failed = harness.wait_until(lambda: "Failed to export" in orch.stderr(), 5)
        self.assertTrue(failed, "the failed export is logged\n" + orch.log())
        self.assertEqual(orch.stderr().count("Failed to export"), 1, orch.log())
        began = time.monotonic()
        self.aether("down")
        self.assertEqual(orch.wait_exit(15), 0, orch.log())
        self.assertLess(time.monotonic() - began, 8, "aether down waits for the last export only briefly")

    def test_an_invalid_otlp_endpoint_is_refused_naming_it(self):
        fn = self.function("badurl", "traced.py")
        config = self.write_config([fn], orchestrator={"otlp_endpoint": "grpc://127.0.0.1:4317"})
        result = subprocess.run([harness.aether_bin(), "validate", config], capture_output=True, text=True, timeout=30)
        self.assertNotEqual(result.returncode, 0, result)
        self.assertIn("orchestrator.otlp_endpoint", result.stdout + result.stderr)
        self.assertIn("grpc://127.0.0.1:4317", result.stdout + result.stderr)


if __name__ == "__main__":
    unittest.main()
