"""timeout_ms for process handlers, whose connections the orchestrator does not carry: a request
left unanswered past it gets a 504 on its connection and the instance is replaced."""

import http.client
import time

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness


SLOW_PROCESS_HANDLER = r'''
import http.server, json, os, socket, time
''' + harness.IDENTITY_CODE + r'''

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(30)
        body = json.dumps(_identity()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["AETHER_TRIGGER_PORT"])), Handler)
control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
control.connect(os.environ["AETHER_SOCKET"])
control.sendall(b"READY\n")
server.serve_forever()
'''


class ProcessTimeoutTest(harness.AetherTestCase):
    def test_a_process_handler_over_timeout_ms_is_answered_504_and_replaced(self):
        self.write_file("slow.py", SLOW_PROCESS_HANDLER)
        fn = self.function("ptime", "slow.py", protocol="process", timeout_ms=600)
        self.start(self.write_config([fn]))
        # A keep-alive connection that is merely idle (answered, then quiet past timeout_ms)
        # is not a late request.
        conn = http.client.HTTPConnection("127.0.0.1", fn["trigger_port"], timeout=10)
        conn.request("GET", "/")
        first = harness.read_response(conn).json()
        first_instance = harness.instance_pid(first)
        self.assertIsNotNone(first_instance, first)
        time.sleep(1.5)
        conn.request("GET", "/")
        self.assertStatus(harness.read_response(conn), 200, "the same keep-alive connection after idling")
        conn.close()
        began = time.monotonic()
        slow = self.get(fn["trigger_port"], "/slow", timeout=20)
        waited = time.monotonic() - began
        self.assertStatus(slow, 504, "a request the handler never answers")
        self.assertIn("did not answer within timeout_ms 600", slow.json()["error"])
        self.assertLess(waited, 5.0, "the 504 should come soon after timeout_ms, not when the handler gives up")
        replacement = self.wait_serving(fn["id"], exclude_pids=(first_instance,))
        answer = self.get(fn["trigger_port"], "/").json()
        self.assertNotEqual(answer["token"], first["token"])
        self.assertEqual(harness.instance_pid(answer), replacement["pid"])
        self.assertGreaterEqual(self.stats(fn["id"])["stats"]["timeouts"], 1)
