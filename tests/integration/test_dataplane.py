"""The eBPF data plane (`dataplane: ebpf`, the default) as `aether up` uses it.

Run inside a private network namespace (scripts/test.sh runs the suite under `unshare -n`): the
tests attach XDP to `lo` and look at every socket and bpf_link of the namespace. Outside one
they are skipped, so they never touch the host's interfaces."""

import ctypes
import errno
import json
import os
import socket
import subprocess
import threading
import time
import unittest

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness


def in_private_network() -> bool:
    """Only `lo` (and test veths) in /proc/self/net/dev: not the host's namespace."""
    with open("/proc/self/net/dev") as f:
        names = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    return all(name == "lo" or name.startswith("aeth") for name in names)


_libc = ctypes.CDLL(None, use_errno=True)
_SYS_BPF = 321  # x86_64
_BPF_LINK_GET_NEXT_ID = 31


def kernel_link_ids() -> set[int]:
    """Every bpf_link in the kernel (what `bpftool link` lists)."""
    ids = set()
    start = 0
    while True:
        attr = (ctypes.c_uint32 * 4)(start, 0, 0, 0)  # start_id, next_id, open_flags
        if _libc.syscall(_SYS_BPF, _BPF_LINK_GET_NEXT_ID, attr, ctypes.sizeof(attr)) != 0:
            return ids
        start = attr[1]
        ids.add(start)


def listening_ports() -> set[int]:
    """Ports some TCP socket of this namespace listens on (/proc/net/tcp, state 0A)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def connect_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


#: A process handler answering {"value": $VALUE, "listen": ..., and its identity (harness
#: IDENTITY_CODE: pid, pidns, token)}, bound to AETHER_LISTEN_PORT.
PROCESS_HANDLER = r'''
import http.server, json, os, socket
''' + harness.IDENTITY_CODE + r'''

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1

    def do_GET(self):
        body = json.dumps({"value": os.environ.get("VALUE"), **_identity(),
                           "listen": int(os.environ["AETHER_LISTEN_PORT"])}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT_EXPRESSION), Handler)
control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
control.connect(os.environ["AETHER_SOCKET"])
control.sendall(b"READY\n")
server.serve_forever()
'''


#: The seed's own handler protocol, byte for byte: READY without a newline, sent before the
#: server binds AETHER_TRIGGER_PORT on all addresses.
SEED_HANDLER = r'''
import http.server, json, os, socket, time
''' + harness.IDENTITY_CODE + r'''

control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
control.connect(os.environ["AETHER_SOCKET"])
control.sendall(b"READY")
time.sleep(0.3)  # READY comes before the socket exists

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({**_identity(), "bound": int(os.environ["AETHER_TRIGGER_PORT"]),
                           "public": int(os.environ["AETHER_PUBLIC_PORT"])}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["AETHER_TRIGGER_PORT"])), Handler).serve_forever()
'''


@unittest.skipUnless(in_private_network(), "needs a private network namespace (unshare -n), as scripts/test.sh runs it")
class DataplaneTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_common_handler()
        self.write_file("process.py", PROCESS_HANDLER.replace("PORT_EXPRESSION", 'int(os.environ["AETHER_LISTEN_PORT"])'))

    def ebpf(self) -> dict:
        status = self.status()
        self.assertEqual(status["dataplane"], "ebpf")
        return status["ebpf"]

    def port_entry(self, port: int) -> dict:
        [entry] = [p for p in self.ebpf()["ports"] if p["port"] == port]
        return entry

    def test_sdk_trigger_port_is_served_without_being_bound(self):
        fn = self.function("steer")
        self.start(self.write_config([fn]))
        port = fn["trigger_port"]
        for _ in range(3):
            self.assertStatus(self.get(port, "/json"), 200, "through sk_lookup")
        entry = self.port_entry(port)
        self.assertEqual((entry["function"], entry["socket"], entry["in_socket_map"]), (fn["id"], "gateway", True))
        self.assertEqual(entry["steered"], 3)
        links = self.ebpf()["links"]
        self.assertEqual([link["program"] for link in links], ["aether_dispatch"])
        self.assertIn(links[0]["link_id"], kernel_link_ids())
        # Another port nobody mapped is refused as usual.
        self.assertTrue(connect_refused(harness.free_port()))
        # The CLI shows the section.
        text = self.aether("stats").stdout
        self.assertIn("Data plane: eBPF", text)
        self.assertIn("aether_dispatch", text)

    def test_process_handler_socket_is_steered_and_redeploy_loses_no_connection(self):
        fn = self.function("proc", "process.py", protocol="process", environment={"VALUE": "v1"})
        self.start(self.write_config([fn]))
        port = fn["trigger_port"]
        first = self.get(port, "/").json()
        self.assertEqual(first["value"], "v1")
        self.assertNotEqual(first["listen"], port, "the handler should bind its own private port")
        # The map entry names the instance by its host pid (confined: the sandbox's init, the
        # handler's parent, PID 1 of the instance's namespace).
        first_instance, first_handler = harness.instance_pid(first), harness.host_pid(first)
        self.assertIsNotNone(first_handler, first)
        entry = self.port_entry(port)
        self.assertEqual((entry["socket"], entry["pid"], entry["in_socket_map"]), ("handler", first_instance, True))

        hammer = harness.Hammer(port, "/", "fresh").start()
        try:
            self.assertTrue(harness.wait_until(lambda: len(hammer.results) >= 20, 10.0), "no progress")
            result = self.aether("deploy", self.write_config([dict(fn, environment={"VALUE": "v2"})], name="v2.yaml"))
            self.assertIn("replaced", result.stdout)
            deployed = time.monotonic()
            self.assertTrue(
                harness.wait_until(lambda: sum(1 for r in hammer.results if r[0] > deployed) >= 20, 10.0),
                "the load stalled after the deploy")
        finally:
            hammer.stop()
        bad = [r for r in hammer.results if r[2] != 200]
        self.assertEqual(bad, [], f"refused or failed connections during the redeploy of {len(hammer.results)}"
                         + self.logs_of())
        values = [r[3] for r in hammer.results]
        self.assertEqual((values[0], values[-1]), ("v1", "v2"))
        switch = values.index("v2")
        self.assertTrue(all(v == "v2" for v in values[switch:]), "went back to the old generation")
        second = self.get(port, "/").json()
        self.assertNotEqual(second["token"], first["token"], "still served by the old handler")
        self.assertEqual(self.port_entry(port)["pid"], harness.instance_pid(second))
        self.assertNotEqual(harness.instance_pid(second), first_instance)
        self.assertTrue(
            harness.wait_until(lambda: not harness._pid_alive(first_handler) and not harness._pid_alive(first_instance),
                               10.0), "old handler still runs")

    def test_a_crashed_process_handler_is_replaced_and_steered_again(self):
        fn = self.function("phoenix", "process.py", protocol="process")
        self.start(self.write_config([fn]))
        port = fn["trigger_port"]
        first = self.get(port, "/").json()
        first_instance, first_handler = harness.instance_pid(first), harness.host_pid(first)
        self.assertIsNotNone(first_handler, first)
        os.kill(first_handler, 9)
        # Until the replacement is READY the port is refused (the kernel dropped the dead
        # socket's entry); then the replacement's own socket is steered.
        self.wait_serving(fn["id"], exclude_pids=(first_instance,))
        second = self.get(port, "/").json()
        self.assertNotEqual(second["token"], first["token"])
        self.assertNotEqual(second["listen"], first["listen"])
        entry = self.port_entry(port)
        self.assertEqual((entry["pid"], entry["in_socket_map"]), (harness.instance_pid(second), True))

    def test_trigger_ports_are_held_against_other_binds_and_orchestrators(self):
        sdk = self.function("held")
        proc = self.function("heldp", "process.py", protocol="process")
        self.start(self.write_config([sdk, proc]))
        for fn in (sdk, proc):
            with socket.socket() as other:
                with self.assertRaises(OSError) as raised:
                    other.bind(("127.0.0.1", fn["trigger_port"]))
                self.assertEqual(raised.exception.errno, errno.EADDRINUSE)
        # A second orchestrator asking for the same port fails instead of being shadowed.
        again = dict(sdk, id=self.fid("again"))
        orch = self.start_expect_failure(self.write_config(
            [again], name="second.yaml", orchestrator={"control_socket": self.tmp + "/second.sock"}))
        self.assertIn(f"trigger port {sdk['trigger_port']}", orch.stderr())
        self.assertIn("Address already in use", orch.stderr())
        self.assertStatus(self.get(sdk["trigger_port"], "/json"), 200, "the first orchestrator still serves")

    def test_seed_style_handler_works_unchanged(self):
        # The seed's protocol as its own examples speak it: connect to AETHER_SOCKET, send the 5
        # bytes READY (no newline) BEFORE binding, then bind AETHER_TRIGGER_PORT on 0.0.0.0.
        self.write_file("seed.py", SEED_HANDLER)
        fn = self.function("seed", "seed.py", protocol="process")
        self.start(self.write_config([fn]))
        port = fn["trigger_port"]
        answer = self.get(port, "/").json()
        self.assertEqual(answer["public"], port, "AETHER_PUBLIC_PORT names the port clients use")
        self.assertNotEqual(answer["bound"], port, "it bound the port it was handed as AETHER_TRIGGER_PORT")
        entry = self.port_entry(port)
        self.assertEqual((entry["socket"], entry["pid"], entry["in_socket_map"]),
                         ("handler", harness.instance_pid(answer), True))
        # A redeploy swaps to the new handler's socket like any other process handler.
        hammer = harness.Hammer(port, "/", "fresh").start()
        try:
            self.assertTrue(harness.wait_until(lambda: len(hammer.results) >= 10, 10.0), "no progress")
            self.aether("deploy", "--force", self.write_config([fn], name="again.yaml"))
            deployed = time.monotonic()
            self.assertTrue(harness.wait_until(lambda: sum(1 for r in hammer.results if r[0] > deployed) >= 10, 10.0))
        finally:
            hammer.stop()
        self.assertEqual([r for r in hammer.results if r[2] != 200], [], "refused or failed during the redeploy")

    def test_ready_without_ever_listening_times_out_naming_the_port(self):
        self.write_file("elsewhere.py", PROCESS_HANDLER.replace("PORT_EXPRESSION", "0"))
        fn = self.function("elsewhere", "elsewhere.py", protocol="process", startup_timeout_ms=1000)
        orch = self.start_expect_failure(self.write_config([fn]))
        self.assertIn("sent READY but did not listen on its port", orch.stderr())
        self.assertIn("AETHER_TRIGGER_PORT", orch.stderr())

    def test_xdp_counts_the_packets_sent_to_a_trigger_port(self):
        fn = self.function("count")
        metrics = self.free_port()
        self.start(self.write_config([fn], orchestrator={"xdp_interface": "lo", "metrics_port": metrics}))
        port = fn["trigger_port"]
        links = {link["program"]: link for link in self.ebpf()["links"]}
        self.assertEqual(set(links), {"aether_dispatch", "aether_xdp"})
        self.assertIn("interface lo (generic XDP)", links["aether_xdp"]["target"])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for _ in range(25):
                udp.sendto(b"x" * 58, ("127.0.0.1", port))
        entry = self.port_entry(port)
        self.assertEqual(entry["packets"], 25)
        self.assertEqual(entry["bytes"], 25 * (14 + 20 + 8 + 58))
        self.assertStatus(self.get(port, "/json"), 200, "with XDP attached")
        self.assertGreater(self.port_entry(port)["packets"], 25)
        self.assertIn("PACKETS", self.aether("stats").stdout)
        text = self.get(metrics, "/metrics").body.decode()
        labels = f'{{function="{fn["id"]}",port="{port}"}}'
        self.assertIn(f"aether_ebpf_steered_connections_total{labels} ", text)
        self.assertRegex(text, rf"aether_ebpf_packets_total{labels} (\d+)")

    def test_draining_drops_new_connections_at_xdp(self):
        fn = self.function("drain", timeout_ms=10000)
        orch = self.start(self.write_config([fn], orchestrator={"xdp_interface": "lo"}))
        port = fn["trigger_port"]
        slow = {}

        def request():
            slow["response"] = harness.http_request(port, path="/sleep?s=1.5", timeout=10)

        worker = threading.Thread(target=request)
        worker.start()
        self.assertTrue(harness.wait_until(lambda: self.stats(fn["id"])["instances"][0]["in_flight"] == 1, 5.0))
        down = subprocess.Popen([harness.aether_bin(), "down", "--socket", self.control_socket],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.assertTrue(harness.wait_until(lambda: self.status()["functions"][0]["state"] == "draining", 5.0),
                        orch.log())
        # The SYN is dropped: no refusal, no 503, the connect just does not complete.
        with self.assertRaises(socket.timeout):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        worker.join(10)
        self.assertStatus(slow["response"], 200, "the request in flight when the drain began")
        self.assertEqual(down.wait(15), 0)

    def test_native_xdp_on_a_veth_from_another_namespace(self):
        # A second private namespace plays the client host, joined to ours by a veth pair; XDP
        # runs in native (driver) mode on our end, and only our veth address is steered.
        client = subprocess.Popen(["unshare", "--net", "sleep", "600"])

        def stop_client():
            client.kill()
            client.wait(10)

        self.addCleanup(stop_client)
        self.addCleanup(subprocess.run, ["ip", "link", "del", "aeth0"], capture_output=True)

        def run(*cmd):
            subprocess.run(list(cmd), check=True, capture_output=True)

        def in_client(*cmd):
            return ["nsenter", "-t", str(client.pid), "-n", *cmd]

        time.sleep(0.1)
        run("ip", "link", "add", "aeth0", "type", "veth", "peer", "name", "aeth1", "netns", str(client.pid))
        run("ip", "addr", "add", "10.77.0.1/24", "dev", "aeth0")
        run("ip", "link", "set", "aeth0", "up")
        run(*in_client("ip", "addr", "add", "10.77.0.2/24", "dev", "aeth1"))
        run(*in_client("ip", "link", "set", "aeth1", "up"))

        fn = self.function("veth")
        self.start(self.write_config(
            [fn], orchestrator={"listen_address": "10.77.0.1", "xdp_interface": "aeth0", "xdp_mode": "native"}))
        port = fn["trigger_port"]
        links = {link["program"]: link["target"] for link in self.ebpf()["links"]}
        self.assertEqual(links["aether_xdp"], "interface aeth0 (native XDP)")

        script = (
            "import socket, sys, http.client\n"
            "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"[u.sendto(b'y' * 100, ('10.77.0.1', {port})) for _ in range(40)]\n"
            f"c = http.client.HTTPConnection('10.77.0.1', {port}, timeout=5)\n"
            "c.request('GET', '/json'); r = c.getresponse(); print(r.status, r.read().decode())\n"
        )
        out = subprocess.run(in_client("python3", "-c", script), capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        status, body = out.stdout.split(" ", 1)
        self.assertEqual(status, "200", out.stdout)
        self.assertEqual(json.loads(body)["function"], fn["id"])
        entry = self.port_entry(port)
        # 40 datagrams, then the TCP packets of one request: at least a SYN, ACK, request, FIN.
        self.assertGreaterEqual(entry["packets"], 44)
        self.assertLess(entry["packets"], 60)
        self.assertGreaterEqual(entry["bytes"], 40 * (14 + 20 + 8 + 100))
        self.assertEqual(entry["steered"], 1)
        # Only the configured address is steered: loopback to the same port is refused.
        self.assertTrue(connect_refused(port))

    def test_kill_9_leaves_nothing_attached(self):
        fn = self.function("crash")
        config = self.write_config([fn], orchestrator={"xdp_interface": "lo"})
        orch = self.start(config)
        ids = {link["link_id"] for link in self.ebpf()["links"]}
        self.assertEqual(len(ids), 2)
        self.assertTrue(ids <= kernel_link_ids())
        orch.kill()
        self.assertTrue(harness.wait_until(lambda: not (ids & kernel_link_ids()), 5.0),
                        f"links {ids & kernel_link_ids()} still attached after SIGKILL")
        self.assertTrue(connect_refused(fn["trigger_port"]))
        # lo is free for XDP again: the next orchestrator attaches and serves.
        self.start(config)
        self.assertStatus(self.get(fn["trigger_port"], "/json"), 200, "after restarting")

    def test_attach_failures_stop_up_with_the_kernels_reason(self):
        fn = self.function("fail")
        orch = self.start_expect_failure(self.write_config([fn], orchestrator={"xdp_interface": "nosuch0"}))
        self.assertIn("eBPF program aether_xdp could not attach to interface nosuch0", orch.stderr())
        orch = self.start_expect_failure(
            self.write_config([fn], name="native.yaml", orchestrator={"xdp_interface": "lo", "xdp_mode": "native"}))
        self.assertIn("aether_xdp could not attach to interface lo (native XDP)", orch.stderr())
        self.assertIn("not supported", orch.stderr())
        # A second orchestrator cannot take lo's XDP hook from the first one.
        other = self.function("first")
        self.start(self.write_config([other], name="first.yaml", orchestrator={"xdp_interface": "lo"}))
        second = self.write_config([fn], name="second.yaml",
                                   orchestrator={"xdp_interface": "lo", "control_socket": self.tmp + "/second.sock"})
        orch = self.start_expect_failure(second)
        self.assertIn("Device or resource busy", orch.stderr())

    def test_sockets_dataplane_is_an_explicit_choice(self):
        fn = self.function("plain")
        self.start(self.write_config([fn], orchestrator={"dataplane": "sockets"}))
        self.assertIn(fn["trigger_port"], listening_ports())
        status = self.status()
        self.assertEqual((status["dataplane"], status.get("ebpf")), ("sockets", None))
        self.assertStatus(self.get(fn["trigger_port"], "/json"), 200, "sockets data plane")
        self.assertIn("Data plane: sockets", self.aether("stats").stdout)


if __name__ == "__main__":
    unittest.main()
