"""Ready before serve: requests that arrive while a function starts wait for it (never a 5xx),
`aether wait` and `up --ready-file` tell a script when everything serves, and a restart right
after ordinary traffic (ports in TIME_WAIT) binds its trigger ports again at once."""

import http.client
import os
import socket
import subprocess
import threading
import time

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness


#: An sdk handler whose import takes `INIT_SECONDS`: the window in which requests used to get 503.
SLOW_SDK_HANDLER = r'''
import os, time
import aetherless

time.sleep(float(os.environ.get("INIT_SECONDS", "1.5")))

@aetherless.handler
def handle(req):
    return {"pid": os.getpid()}
'''

#: A process handler (the seed's protocol with AETHER_LISTEN_PORT) that takes INIT_SECONDS to start.
SLOW_PROCESS_HANDLER = r'''
import http.server, json, os, socket, time

time.sleep(float(os.environ.get("INIT_SECONDS", "1.5")))

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({"pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.headers.get("Connection", "").lower() == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["AETHER_LISTEN_PORT"])), Handler)
control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
control.connect(os.environ["AETHER_SOCKET"])
control.sendall(b"READY\n")
server.serve_forever()
'''


class Prober:
    """Sends one request at a time to a port from a thread, each on a new connection, and records
    (time sent, outcome): an HTTP status, or the name of the socket error."""

    def __init__(self, port: int):
        self.port = port
        self.results: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(30)

    def _run(self):
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
                conn.request("GET", "/")
                status = conn.getresponse().status
                conn.close()
                self.results.append((sent, status))
            except OSError as error:
                self.results.append((sent, type(error).__name__))
                time.sleep(0.02)


def time_wait_on(port: int) -> bool:
    out = subprocess.run(["ss", "-Htan", "state", "time-wait", f"sport = :{port}"], capture_output=True, text=True)
    return bool(out.stdout.strip())


class ReadinessTest(harness.AetherTestCase):
    def probe_start_up(self, fn: dict) -> tuple[list, float]:
        """Starts `aether up` with `fn`, probing its port from the moment `up` starts until the
        first 200; returns the probe results and when `up` said it serves."""
        prober = Prober(fn["trigger_port"]).start()
        try:
            orch = self.start(self.write_config([fn]))
            serving = time.monotonic()
            self.assertTrue(
                harness.wait_until(lambda: any(r[1] == 200 for r in prober.results), 20.0),
                f"never served: {prober.results[-5:]}" + orch.log())
        finally:
            prober.stop()
        return prober.results, serving

    def assertHeldNotRefused(self, results: list, serving: float, held_for: float = 0.0):
        """Once the port was held (the first attempt that was not refused), nothing but 200.
        `held_for`: one of the 200s was sent at least that long before the function served (it
        was held that long, not refused and retried)."""
        held = next(i for i, r in enumerate(results) if r[1] != "ConnectionRefusedError")
        after = results[held:]
        outcomes = {}
        for _, outcome in after:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        self.assertEqual(set(outcomes), {200}, f"after the port was held: {outcomes}")
        # At least one of the 200s was sent before the function served: it waited.
        self.assertTrue(
            any(sent < serving - held_for for sent, _ in after), f"nothing sent in the start-up window: {outcomes}")

    def test_sdk_requests_during_start_up_wait_for_the_first_instance(self):
        self.write_file("slow.py", SLOW_SDK_HANDLER)
        fn = self.function("slowsdk", "slow.py", environment={"INIT_SECONDS": "1.5"})
        results, serving = self.probe_start_up(fn)
        self.assertHeldNotRefused(results, serving)

    def test_process_handler_requests_during_start_up_are_held_not_refused(self):
        self.write_file("slowproc.py", SLOW_PROCESS_HANDLER)
        fn = self.function("slowproc", "slowproc.py", protocol="process", environment={"INIT_SECONDS": "1.5"})
        results, serving = self.probe_start_up(fn)
        # The handler takes 1.5 s to listen: a connection held through most of it, not refused.
        self.assertHeldNotRefused(results, serving, held_for=0.5)
        [port] = [p for p in self.status()["ebpf"]["ports"] if p["port"] == fn["trigger_port"]]
        self.assertGreater(port["held"], 0, port)

    def test_a_function_added_by_deploy_holds_its_requests_while_it_starts(self):
        self.write_common_handler()
        self.write_file("slow.py", SLOW_SDK_HANDLER)
        first = self.function("first")
        self.start(self.write_config([first]))
        fn = self.function("added", "slow.py", environment={"INIT_SECONDS": "1.5"})
        prober = Prober(fn["trigger_port"]).start()
        try:
            self.aether("deploy", self.write_config([first, fn], name="more.yaml"))
            deployed = time.monotonic()
            self.assertTrue(harness.wait_until(lambda: any(r[1] == 200 for r in prober.results), 10.0))
        finally:
            prober.stop()
        self.assertHeldNotRefused(prober.results, deployed)

    def test_wait_and_ready_file_say_when_everything_serves(self):
        self.write_file("slow.py", SLOW_SDK_HANDLER)
        fn = self.function("waited", "slow.py", environment={"INIT_SECONDS": "1.0"})
        ready_file = os.path.join(self.tmp, "ready")
        config = self.write_config([fn])
        orch = self.start_up(config)
        # `up` was started without --ready-file here; a second check below uses it.
        began = time.monotonic()
        waited = self.aether("wait", "--timeout", "20")
        self.assertIn("ready: 1 function(s) serving", waited.stdout)
        self.assertGreater(time.monotonic() - began, 0.5, "wait returned before the handler could have started")
        self.assertStatus(self.get(fn["trigger_port"], "/"), 200, "right after wait")
        self.aether("down")
        self.assertEqual(orch.wait_exit(15), 0, orch.log())

        proc = subprocess.Popen(
            [harness.aether_bin(), "up", "-c", config, "--ready-file", ready_file],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.tmp)
        try:
            self.assertTrue(harness.wait_until(lambda: os.path.exists(ready_file), 20.0), "no ready file")
            self.assertStatus(self.get(fn["trigger_port"], "/"), 200, "once the ready file exists")
            with open(ready_file) as f:
                self.assertEqual(int(f.read()), proc.pid)
        finally:
            self.aether("down", check=False)
            proc.wait(30)
        self.assertFalse(os.path.exists(ready_file), "the ready file should go with the orchestrator")

    def test_wait_without_an_orchestrator_gives_up_naming_the_socket(self):
        result = self.aether("wait", "--timeout", "0.5", check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("not ready within 0.5 s", result.stderr)
        self.assertIn(self.control_socket, result.stderr)

    def test_restart_right_after_traffic_binds_the_trigger_ports_again(self):
        self.write_common_handler()
        self.write_file("slowproc.py", SLOW_PROCESS_HANDLER)
        sdk = self.function("twsdk")
        proc = self.function("twproc", "slowproc.py", protocol="process", environment={"INIT_SECONDS": "0"})
        config = self.write_config([sdk, proc])
        orch = self.start(config)
        for fn, path in ((sdk, "/json"), (proc, "/")):
            # Read to end-of-file before closing: the server closes first, so the TIME_WAIT
            # is on its side, on the trigger port.
            answer = harness.raw_exchange(
                fn["trigger_port"], f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:200])
        self.assertTrue(
            harness.wait_until(lambda: time_wait_on(sdk["trigger_port"]) and time_wait_on(proc["trigger_port"]), 5.0),
            "no TIME_WAIT on the trigger ports: the test would prove nothing")
        self.aether("down")
        self.assertEqual(orch.wait_exit(15), 0, orch.log())
        again = self.start(config)
        self.assertTrue(time_wait_on(sdk["trigger_port"]), "TIME_WAIT should still be there")
        self.assertStatus(self.get(sdk["trigger_port"], "/json"), 200, "sdk after the restart")
        self.assertStatus(self.get(proc["trigger_port"], "/"), 200, "process handler after the restart")
        self.assertTrue(again.alive())
