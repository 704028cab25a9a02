"""Request ids and W3C trace context (issue 18, item 2): every request through the gateway has
an id, the trace id of the `traceparent` it came with or of a new trace; the handler sees it
(`request.request_id`, `request.traceparent`), the response carries `x-request-id`, and
`aether logs ID --request RID` finds what the handler logged while serving it."""

import re

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness

HANDLER = r'''
import time

import aetherless


@aetherless.handler
def handle(req):
    aetherless.log("serving", req.path)
    if req.path == "/slow":
        time.sleep(3)
    return {"request_id": req.request_id, "traceparent": req.traceparent}
'''

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


class RequestIdTest(harness.AetherTestCase):
    def test_a_traceparent_is_the_request_id_end_to_end(self):
        fn = self.function("traced", self.write_file("traced.py", HANDLER))
        self.start(self.write_config([fn]))
        r = self.get(fn["trigger_port"], "/with-trace", headers={"traceparent": PARENT})
        self.assertStatus(r, 200, "traced request")
        self.assertEqual(r.json(), {"request_id": TRACE, "traceparent": PARENT})
        self.assertEqual(r.headers.get("x-request-id"), TRACE)
        # Without one (or with an invalid one), a new trace: a fresh 32-hex id, a valid traceparent.
        ids = set()
        for headers in ({}, {"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"}, {"traceparent": "junk"}):
            r = self.get(fn["trigger_port"], "/without", headers=headers)
            body = r.json()
            self.assertRegex(body["request_id"], r"^[0-9a-f]{32}$")
            self.assertEqual(r.headers.get("x-request-id"), body["request_id"])
            self.assertRegex(body["traceparent"], rf"^00-{body['request_id']}-[0-9a-f]{{16}}-01$")
            ids.add(body["request_id"])
        self.assertEqual(len(ids), 3, "every new trace has its own id")
        # What the handler logged while serving the traced request, and only that.
        def logged():
            out = self.aether("logs", fn["id"], "--request", TRACE).stdout
            return out if "serving /with-trace" in out else None

        out = harness.wait_until(logged, 5)
        self.assertTrue(out, self.aether("logs", fn["id"]).stdout)
        self.assertEqual(len(out.strip().splitlines()), 1, out)
        self.assertIn(f"request_id={TRACE} serving /with-trace", out)
        self.assertNotIn("/without", out)

    def test_the_orchestrators_lines_about_a_failed_request_carry_its_id(self):
        # A request the orchestrator answers itself (504: past timeout_ms) is logged with its id,
        # and `aether logs --request` shows that line beside what the handler logged for it.
        fn = self.function("slow", self.write_file("slow.py", HANDLER), timeout_ms=300)
        orch = self.start(self.write_config([fn]))
        r = self.get(fn["trigger_port"], "/slow", headers={"traceparent": PARENT})
        self.assertStatus(r, 504, "past timeout_ms")
        self.assertEqual(r.headers.get("x-request-id"), TRACE)

        def logged():
            out = self.aether("logs", fn["id"], "--request", TRACE).stdout
            return out if "[aether]" in out and "serving /slow" in out else None

        out = harness.wait_until(logged, 5)
        self.assertTrue(out, self.aether("logs", fn["id"]).stdout)
        self.assertIn(f"[aether] request_id={TRACE} 504 GET /slow", out)
        self.assertIn(f"request_id={TRACE}", orch.stderr())
        self.assertRegex(orch.stderr(), rf"request_id={TRACE}.*request failed: GET /slow")

    def test_swift_sdk_sees_the_request_id(self):
        import os

        binary = os.path.join(os.path.dirname(harness.AETHER_BIN), "hello-swift")
        fn = self.function("swtraced", binary)
        self.start(self.write_config([fn]))
        r = self.get(fn["trigger_port"], "/?name=x", headers={"traceparent": PARENT})
        self.assertStatus(r, 200, "Swift handler")
        self.assertEqual(r.headers.get("x-request-id"), TRACE)
