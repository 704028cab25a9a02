"""Confinement (issue 14, SECURITY.md): a hostile function tries, from inside its handler, every
way past its confinement the issue lists, while a victim function (with an environment value,
a snapshot image and rings) and the orchestrator keep answering.

Each attempt reports what happened; the test fails on any attempt that succeeded. The paths and
PIDs the attacker aims at are the real ones on the host, handed to it in the request: it has no
way to find them from inside, which is part of the point.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness

VICTIM_VALUE = "victim-env-value-7c1e"

VICTIM_HANDLER = r'''
import aetherless

@aetherless.handler
def handle(req):
    return {"victim": "ok"}
'''

# Every attempt returns "blocked: <why>" or "SUCCEEDED: <what>".
HOSTILE_HANDLER = r'''
import ctypes
import errno
import json
import os
import signal
import socket
import socket

import aetherless

libc = ctypes.CDLL(None, use_errno=True)


def attempt(action):
    try:
        result = action()
    except OSError as e:
        return f"blocked: {errno.errorcode.get(e.errno, e.errno)}"
    except Exception as e:
        return f"blocked: {type(e).__name__}: {e}"
    return result


def syscall_errno(result):
    if result == -1:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return f"SUCCEEDED: returned {result}"


def read(path, size=4096):
    with open(path, "rb") as f:
        return f.read(size)


def read_environments(value):
    # Every process this one can see, and the victim's host PID itself.
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if value.encode() in read(f"/proc/{name}/environ", 1 << 20):
                    found.append(name)
            except OSError:
                pass
    return f"SUCCEEDED: {found}" if found else "blocked: not visible"


def open_rings(victim_pid):
    names = [n for n in os.listdir("/dev/shm") if n.startswith("aetherless-")]
    if names:
        return f"SUCCEEDED: /dev/shm has {names}"
    for fd in os.listdir(f"/proc/{victim_pid}/fd"):
        target = os.readlink(f"/proc/{victim_pid}/fd/{fd}")
        if "memfd" in target or "aetherless" in target:
            os.open(f"/proc/{victim_pid}/fd/{fd}", os.O_RDWR)
            return f"SUCCEEDED: opened {target}"
    return "blocked: no ring found"


def write_image(folder):
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "r+b") as f:
            f.write(b"\0")
            return f"SUCCEEDED: wrote {name}"
    return "blocked: empty"


def signal_orchestrator(pid):
    os.kill(pid, signal.SIGTERM)
    return "SUCCEEDED: signalled"


def ptrace(pid):
    return syscall_errno(libc.ptrace(16, pid, 0, 0))  # PTRACE_ATTACH


def connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
    return f"SUCCEEDED: {s.recv(100)!r}"


def write_file(path, text=b"0"):
    with open(path, "wb") as f:
        f.write(text)
    return f"SUCCEEDED: wrote {path}"


def cgroup_escape():
    # The memory cgroup it is in, as the host names it; /sys is not mounted in the sandbox.
    lines = read("/proc/self/cgroup").decode().split("\n")
    memory = [line.split(":", 2)[2] for line in lines if ":memory:" in line][0]
    parent = os.path.dirname(memory)
    for path in (f"/sys/fs/cgroup/memory{parent}/cgroup.procs", f"/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes"):
        try:
            return write_file(path, str(os.getpid()).encode())
        except OSError:
            continue
    os.mkdir("/sys/fs/cgroup/x")
    return "SUCCEEDED: mkdir"


def fork_bomb():
    children = []
    try:
        for _ in range(400):
            pid = os.fork()
            if pid == 0:
                import time
                time.sleep(3)
                os._exit(0)
            children.append(pid)
    except OSError as e:
        result = f"blocked: {errno.errorcode.get(e.errno)} after {len(children)} forks"
    else:
        result = f"SUCCEEDED: {len(children)} forks"
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return result


def mount():
    return syscall_errno(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))


def unshare():
    return syscall_errno(libc.unshare(0x00020000))  # CLONE_NEWNS


def identity():
    status = dict(line.split(":\t", 1) for line in read("/proc/self/status").decode().splitlines() if ":\t" in line)
    return {key: status[key].strip() for key in ("Uid", "Gid", "CapEff", "CapBnd", "NoNewPrivs", "Seccomp")}


@aetherless.handler
def handle(req):
    if req.path == "/identity":
        return identity()
    if req.path == "/secret":
        mine = os.environ.get("MY_SECRET_NAME", "")
        return {
            "file": attempt(lambda: read(f"/run/secrets/{mine}").decode()),
            "in_environment": [k for k, v in os.environ.items() if "s3cret" in v],
        }
    if req.path == "/allocate":
        hog = bytearray(int(req.query.get("mb", "300")) << 20)
        for i in range(0, len(hog), 4096):
            hog[i] = 1
        return {"allocated": len(hog)}
    target = json.loads(req.body)
    return {
        "read another function's environment": attempt(lambda: read_environments(target["victim_value"])),
        "read the victim's /proc environ": attempt(lambda: read(f"/proc/{target['victim_pid']}/environ").decode()),
        "open another function's rings": attempt(lambda: open_rings(target["victim_pid"])),
        "read another function's secret": attempt(lambda: read(target["victim_secret"]).decode()),
        "read another function's secret by name": attempt(lambda: read("/run/secrets/" + target["victim_secret_name"]).decode()),
        "read the secret store": attempt(lambda: os.listdir(target["secret_store"])),
        "write another function's image": attempt(lambda: write_image(target["victim_image"])),
        "read another function's image": attempt(lambda: os.listdir(target["victim_image"])),
        "signal the orchestrator": attempt(lambda: signal_orchestrator(target["orchestrator_pid"])),
        "ptrace the orchestrator": attempt(lambda: ptrace(target["orchestrator_pid"])),
        "connect to the control socket": attempt(lambda: connect(target["control_socket"])),
        "write its cgroup files": attempt(cgroup_escape),
        "fork bomb": attempt(fork_bomb),
        "mount": attempt(mount),
        "unshare": attempt(unshare),
        "read /etc/shadow": attempt(lambda: read("/etc/shadow").decode()),
        "write its own code folder": attempt(lambda: write_file(target["own_folder"] + "/planted.py")),
        "write the host's /etc": attempt(lambda: write_file("/etc/aetherless-planted")),
    }
'''


def pids_running(fragment: str) -> list[int]:
    """Host PIDs of processes whose command line contains `fragment`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if fragment.encode() in f.read():
                    found.append(int(name))
        except OSError:
            pass
    return found


class ConfinementTest(harness.AetherTestCase):
    def create_secret(self, name: str, contents: bytes):
        path = os.path.join(self.tmp, f"secret-{name}")
        with open(path, "wb") as f:
            f.write(contents)
        import subprocess

        subprocess.run(
            [harness.aether_bin(), "secret", "create", name, "--from-file", path, "--state-dir", self.state_dir],
            check=True, capture_output=True, timeout=harness.CLI_TIMEOUT,
        )

    def write_config(self, functions, name="aether.yaml", orchestrator=None):
        # `secrets` values are YAML flow lists, written as they are.
        path = super().write_config(functions, name=name, orchestrator=orchestrator)
        with open(path) as f:
            text = f.read()
        text = text.replace('"[', "[").replace(']"', "]")
        text = re.sub(r'cpu_limit: "([0-9.]+)"', r"cpu_limit: \1", text)  # a YAML number
        with open(path, "w") as f:
            f.write(text)
        return path

    def post(self, port: int, path: str, body: dict) -> harness.Response:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return harness.Response(response.status, response.getheaders(), response.read(), response.will_close)
        finally:
            connection.close()

    def test_hostile_handler_gets_nowhere(self):
        # The orchestrator's folders where a handler can see them (the host's root file system,
        # read-only in its view), as the defaults are (/var/lib/aetherless, /run/aetherless),
        # not under /tmp, which every sandbox replaces with its own.
        base = tempfile.mkdtemp(prefix="aeit-confine-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, base, True)
        os.chmod(base, 0o755)
        self.state_dir = os.path.join(base, "state")
        self.control_socket = os.path.join(base, "run", "aether.sock")
        victim_folder = os.path.join(self.tmp, "victim")
        hostile_folder = os.path.join(self.tmp, "hostile")
        for folder in (victim_folder, hostile_folder):
            os.makedirs(folder)
            os.chmod(folder, 0o755)
        victim_handler = self.write_file("victim/handler.py", VICTIM_HANDLER)
        hostile_handler = self.write_file("hostile/handler.py", HOSTILE_HANDLER)
        snapshots = os.path.join(base, "snapshots")
        self.create_secret("victim-secret", b"victim-s3cret-value")
        self.create_secret("mine", b"hostile-s3cret-value")
        victim = self.function(
            "victim", handler=victim_handler, snapshot=True, environment={"VICTIM_VALUE": VICTIM_VALUE}, min_warm=1,
            secrets="[victim-secret]",
        )
        hostile = self.function(
            "hostile", handler=hostile_handler, memory_limit_mb=64, max_pids=32, timeout_ms=20000,
            environment={"MY_SECRET_NAME": "mine"}, secrets="[mine]",
        )
        orchestrator = self.start(
            self.write_config([victim, hostile], orchestrator={"snapshot_dir": snapshots, "restore_timeout_ms": 100})
        )
        self.assertStatus(self.get(victim["trigger_port"], "/"), 200, "the victim before the attack")

        victim_pids = pids_running(victim_handler)
        self.assertTrue(victim_pids, "the victim's instance is running")
        images = [os.path.join(snapshots, name) for name in os.listdir(snapshots) if victim["id"] in name]
        self.assertTrue(images, f"the victim's image folder is in {snapshots}")
        target = {
            "victim_value": VICTIM_VALUE,
            "victim_pid": victim_pids[0],
            "victim_image": images[0],
            "victim_secret": os.path.join(self.state_dir, "secrets", "victim-secret"),
            "victim_secret_name": "victim-secret",
            "secret_store": os.path.join(self.state_dir, "secrets"),
            "orchestrator_pid": orchestrator.pid,
            "control_socket": self.control_socket,
            "own_folder": hostile_folder,
        }
        response = self.post(hostile["trigger_port"], "/attack", target)
        self.assertStatus(response, 200, "the attack's report")
        report = response.json()
        if os.environ.get("AETHER_IT_SHOW_REPORT"):
            print(json.dumps(report, indent=1))
        succeeded = {attempt: result for attempt, result in report.items() if not result.startswith("blocked")}
        self.assertEqual(succeeded, {}, f"attempts that got through (full report: {json.dumps(report, indent=1)})")
        self.assertIn("EAGAIN", report["fork bomb"], "the fork bomb stopped at max_pids")

        # Refused calls fail with EPERM and are counted, per function and call.
        confinement = self.stats(hostile["id"])["confinement"]
        self.assertEqual(confinement["max_pids"], 32, confinement)
        refused = confinement["refused_syscalls"]
        for call in ("ptrace", "mount", "unshare"):
            self.assertGreaterEqual(refused.get(call, 0), 1, f"{call} refusals counted: {confinement}")
        self.assertEqual(self.stats(victim["id"])["confinement"]["refused_syscalls"], {}, "the victim refused nothing")

        # Its own secret: a file at /run/secrets/NAME, never in its environment.
        secret = self.get(hostile["trigger_port"], "/secret").json()
        self.assertEqual(secret["file"], "hostile-s3cret-value", secret)
        self.assertEqual(secret["in_environment"], [], secret)

        identity = self.get(hostile["trigger_port"], "/identity").json()
        self.assertNotEqual(identity["Uid"].split()[0], "0", identity)
        self.assertEqual(identity["CapEff"], "0000000000000000", identity)
        self.assertEqual(identity["CapBnd"], "0000000000000000", identity)
        self.assertEqual(identity["NoNewPrivs"], "1", identity)
        self.assertEqual(identity["Seccomp"], "2", identity)

        # Escaping the memory limit: the instance is killed (502), not the host.
        overrun = self.get(hostile["trigger_port"], "/allocate?mb=300")
        self.assertEqual(overrun.status, 502, overrun.body)

        # The victim and the orchestrator keep answering; nothing was planted.
        self.assertStatus(self.get(victim["trigger_port"], "/"), 200, "the victim after the attack")
        self.assertTrue(orchestrator.alive(), "the orchestrator is alive")
        self.status()
        self.assertFalse(os.path.exists(os.path.join(hostile_folder, "planted.py")))
        self.assertFalse(os.path.exists("/etc/aetherless-planted"))
        # Down before `base` (with the control socket) goes.
        self.aether("down")
        self.assertEqual(orchestrator.wait_exit(15), 0)

    def test_each_function_has_its_own_identity(self):
        a = self.function("a", handler=self.write_file("a.py", HOSTILE_HANDLER))
        b = self.function("b", handler=self.write_file("b.py", HOSTILE_HANDLER))
        self.start(self.write_config([a, b]))
        uid_a = self.get(a["trigger_port"], "/identity").json()["Uid"].split()[0]
        uid_b = self.get(b["trigger_port"], "/identity").json()["Uid"].split()[0]
        self.assertNotEqual(uid_a, "0")
        self.assertNotEqual(uid_a, uid_b, "two functions share a uid")

    def test_process_handler_runs_confined_and_stops_on_sigterm(self):
        handler = self.write_file(
            "proc.py",
            r'''
import http.server, json, os

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
        body = json.dumps({"uid": status["Uid"].split()[0], "seccomp": status["Seccomp"].strip()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

import socket
server = http.server.HTTPServer(("127.0.0.1", int(os.environ["AETHER_TRIGGER_PORT"])), H)
control = socket.socket(socket.AF_UNIX)
control.connect(os.environ["AETHER_SOCKET"])
control.sendall(b"READY\n")
server.serve_forever()
''',
        )
        fn = self.function("proc", handler=handler, protocol="process")
        orchestrator = self.start(self.write_config([fn]))
        answer = self.get(fn["trigger_port"], "/").json()
        self.assertNotEqual(answer["uid"], "0")
        self.assertEqual(answer["seccomp"], "2")
        # A plain http.server does not handle SIGTERM itself; it must still stop at once (it is
        # not PID 1 of its namespace: the sandbox's init forwards the signal).
        started = time.monotonic()
        self.aether("down")
        self.assertIsNotNone(orchestrator.wait_exit(10))
        self.assertLess(time.monotonic() - started, 4.5, "down waited for the kill-after-grace")

    def test_a_checkout_under_a_closed_folder_serves(self):
        # A checkout under a folder the function's uid cannot enter (as /root is): the sandbox
        # covers that folder with an empty one of its own holding only the path to the handler,
        # so the handler runs (spawned and restored alike) and nothing else in the folder shows.
        base = tempfile.mkdtemp(prefix="aeit-closed-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, base, True)
        app = os.path.join(base, "checkout", "app")
        os.makedirs(app)
        os.chmod(os.path.join(base, "checkout"), 0o755)
        os.chmod(app, 0o755)
        with open(os.path.join(base, "private.txt"), "w") as f:
            f.write("not for functions")
        handler = os.path.join(app, "handler.py")
        with open(handler, "w") as f:
            f.write(
                """
import os
import aetherless

@aetherless.handler
def handle(req):
    base = req.query["base"]
    return {"listing": sorted(os.listdir(base)), "private": os.path.exists(base + "/private.txt")}
"""
            )
        os.chmod(handler, 0o644)
        os.chmod(base, 0o700)
        spawned = self.function("spawned", handler=handler)
        restored = self.function("restored", handler=handler, snapshot=True, min_warm=1)
        self.start(self.write_config([spawned, restored], orchestrator={"restore_timeout_ms": 100}))
        for fn in (spawned, restored):
            answer = self.get(fn["trigger_port"], f"/?base={base}").json()
            self.assertEqual(answer, {"listing": ["checkout"], "private": False}, fn["id"])

    def test_a_handler_its_user_cannot_read_fails_fast(self):
        # The handler's own file closed to the function's uid: `up` names it instead of the
        # handler dying with a PermissionError.
        base = tempfile.mkdtemp(prefix="aeit-unreadable-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, base, True)
        os.chmod(base, 0o755)
        handler = os.path.join(base, "handler.py")
        with open(handler, "w") as f:
            f.write(VICTIM_HANDLER)
        os.chmod(handler, 0o600)
        fn = self.function("closed", handler=handler)
        orchestrator = self.start_expect_failure(self.write_config([fn]))
        self.assertIn(f"cannot read {handler}", orchestrator.stderr())
        self.assertIn(f"the file {handler} has mode 600", orchestrator.stderr())

    def test_network_none_has_only_loopback(self):
        handler = self.write_file(
            "net.py",
            r'''
import os, socket
import aetherless

@aetherless.handler
def handle(req):
    try:
        socket.create_connection((req.query["host"], int(req.query["port"])), timeout=2).close()
        outside = "connected"
    except OSError as e:
        outside = f"refused: {e}"
    return {"interfaces": sorted(name for _, name in socket.if_nameindex()), "outside": outside}
''',
        )
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        isolated = self.function("isolated", handler=handler, network="none")
        hosted = self.function("hosted", handler=handler)
        self.start(self.write_config([isolated, hosted]))
        answer = self.get(isolated["trigger_port"], f"/?host=127.0.0.1&port={port}").json()
        self.assertEqual(answer["interfaces"], ["lo"], answer)
        self.assertTrue(answer["outside"].startswith("refused"), answer)
        # The host's network (the default) reaches the same listener.
        answer = self.get(hosted["trigger_port"], f"/?host=127.0.0.1&port={port}").json()
        self.assertEqual(answer["outside"], "connected", answer)

    def test_cpu_limit_caps_cpu_time(self):
        handler = self.write_file(
            "spin.py",
            r'''
import time
import aetherless

@aetherless.handler
def handle(req):
    began, cpu = time.monotonic(), time.process_time()
    while time.monotonic() - began < 1.0:
        pass
    return {"cpu_seconds": time.process_time() - cpu}
''',
        )
        fn = self.function("spin", handler=handler, cpu_limit=0.25)
        self.start(self.write_config([fn]))
        used = self.get(fn["trigger_port"], "/").json()["cpu_seconds"]
        # A quarter of a core over one second of wall time (the CFS quota allows small bursts).
        self.assertLess(used, 0.45, f"spun {used:.2f} CPU seconds in 1 s under cpu_limit: 0.25")
        self.assertGreater(used, 0.05, used)
