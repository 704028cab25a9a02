"""Integration-test harness: runs the real `aether` binary with real Python handlers.

Each test gets its own temporary folder (config, handler files, control socket, the deployed
state's folder ``state_dir``, so no test reads or leaves state in /var/lib/aetherless, logs), free
TCP ports, and function ids with a per-test prefix (``t<pid>-<n>-<name>``) so leftovers of
parallel runs can be told apart. Cleanup stops every orchestrator the test started (``aether down``, then
SIGKILL), and fails the test if shared memory (``/dev/shm/aetherless-<id>-*``) or a process
whose command line mentions the temporary folder is left behind.

Environment:
  AETHER_BIN        the aether binary (default: <repo>/.build/debug/aether)
  AETHER_IT_KEEP=1  keep the temporary folders
  AETHER_IT_NO_SNAPSHOT=1  run AETHER_BIN in place instead of a private copy

The binary is copied once per run to tests/integration/.bin/ (a folder below the repository, so
the copy still finds sdk/python the way the original does): other people rebuilding
.build/debug/aether during a run then neither fail our exec()s with ETXTBSY nor swap the
binary under half of the suite.
"""

from __future__ import annotations

import atexit
import errno
import glob
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AETHER_BIN = os.environ.get("AETHER_BIN") or os.path.join(REPO, ".build", "debug", "aether")
SDK_DIR = os.path.join(REPO, "sdk", "python")
PYTHON = "/usr/bin/python3"

READY_TIMEOUT = 20.0
CLI_TIMEOUT = 30.0

_test_counter = itertools.count(1)
_binary: str | None = None


def aether_bin() -> str:
    """The binary the tests run: a private snapshot of AETHER_BIN (see the module docstring)."""
    global _binary
    if _binary is not None:
        return _binary
    if os.environ.get("AETHER_IT_NO_SNAPSHOT") == "1":
        _binary = AETHER_BIN
        return _binary
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".bin")
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):  # copies left by runs that were killed
        pid = name.rsplit("-", 1)[-1].split(".")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass
    target = os.path.join(folder, f"aether-{os.getpid()}")
    last_error = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            before = os.stat(AETHER_BIN)
            if time.time() - before.st_mtime < 2:  # probably being linked right now
                time.sleep(1)
                continue
            shutil.copy2(AETHER_BIN, target + ".tmp")
            if os.stat(AETHER_BIN).st_mtime_ns != before.st_mtime_ns:
                continue
            os.replace(target + ".tmp", target)
            # The sandbox helper `aether up` looks for next to its binary.
            helper = os.path.join(os.path.dirname(AETHER_BIN), "aether-sandbox")
            if os.path.exists(helper):
                shutil.copy2(helper, target + "-sandbox.tmp")
                os.replace(target + "-sandbox.tmp", os.path.join(folder, "aether-sandbox"))
            subprocess.run([target, "--version"], check=True, capture_output=True, timeout=20)
            atexit.register(_remove, target)
            _binary = target
            return _binary
        except (OSError, subprocess.SubprocessError) as e:
            last_error = e
            time.sleep(1)
    raise RuntimeError(f"cannot take a working copy of {AETHER_BIN}: {last_error}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def _remove(path: str):
    try:
        os.unlink(path)
    except OSError:
        pass


# --------------------------------------------------------------------------- handlers

#: Handler code (needs `os`) defining `_identity()`: who is answering, as a dict to merge into
#: an answer. Confined, every instance is PID 1 (a process handler PID 2) of a PID namespace of
#: its own, so its pid alone tells nothing:
#:   "pid"    its pid in its own namespace,
#:   "pidns"  that namespace (/proc/self/ns/pid; the host's /proc/HOSTPID/ns/pid names the same),
#:   "token"  drawn at the first call, never at import: restored snapshot copies share the
#:            template's import-time memory, so a token drawn then would be the same in all.
#: Equal tokens: the same process; different tokens: different processes. `host_pid(answer)`
#: and `instance_pid(answer)` map an answer to the pids the host (and `aether list`) sees.
IDENTITY_CODE = r'''
_identity_token = None


def _identity():
    global _identity_token
    if _identity_token is None:
        _identity_token = "%d-%s" % (os.getpid(), os.urandom(8).hex())
    return {"pid": os.getpid(), "pidns": os.readlink("/proc/self/ns/pid"), "token": _identity_token}
'''

#: An SDK handler whose behaviour is chosen by the request path (used by most tests).
COMMON_HANDLER = r'''
import os
import time

import aetherless

''' + IDENTITY_CODE + r'''


@aetherless.handler
def handle(req):
    path = req.path
    if path == "/json":
        return {
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "function": os.environ.get("AETHER_FUNCTION_ID"),
            "instance": os.environ.get("AETHER_INSTANCE"),
            **_identity(),
        }
    if path == "/echo":
        return req.body
    if path == "/headers":
        return {
            "lower": req.headers.get("x-test-header"),
            "upper": req.headers.get("X-TEST-HEADER"),
            "mixed_in": "X-tEsT-HeAdEr" in req.headers,
            "names": [name.decode() for name, _ in req.raw_headers],
        }
    if path == "/custom":
        return aetherless.Response(
            201,
            [("X-Custom", "abc"), ("Content-Type", "text/x-custom"), ("Content-Length", "999")],
            "made",
        )
    if path == "/sleep":
        seconds = float(req.query.get("s", "0.2"))
        time.sleep(seconds)
        return {"slept": seconds, "instance": os.environ.get("AETHER_INSTANCE"), **_identity()}
    if path == "/exit":
        os._exit(1)
    if path == "/raise":
        raise RuntimeError("deliberate failure in the handler")
    if path == "/print":
        print(req.query["msg"])
        return {"printed": True}
    if path == "/env":
        return {"value": os.environ.get("VALUE"), **_identity()}
    raise aetherless.HTTPError(404, "no route " + path)
'''


# --------------------------------------------------------------------------- small helpers


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # a plain YAML number (a str would be quoted: a string)
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(str(value))


def render_config(functions: list[dict], orchestrator: dict) -> str:
    lines = ["orchestrator:"]
    for key, value in orchestrator.items():
        lines.append(f"  {key}: {yaml_scalar(value)}")
    lines.append("functions:")
    for function in functions:
        first = True
        for key, value in function.items():
            prefix = "  - " if first else "    "
            first = False
            if isinstance(value, dict):
                lines.append(f"{prefix}{key}:")
                for k, v in value.items():
                    lines.append(f"      {k}: {yaml_scalar(v)}")
            else:
                lines.append(f"{prefix}{key}: {yaml_scalar(value)}")
    return "\n".join(lines) + "\n"


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, will_close: bool):
        self.status = status
        self.header_list = headers
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body
        self.will_close = will_close

    def json(self):
        return json.loads(self.body)

    @property
    def instance(self):
        return self.headers.get("x-aether-instance")

    def __repr__(self):
        return f"<Response {self.status} {self.header_list} {self.body[:300]!r}>"


def http_request(
    port: int, method: str = "GET", path: str = "/", body: bytes | None = None, headers=None, timeout: float = 10.0
) -> Response:
    """One request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return read_response(conn)
    finally:
        conn.close()


def read_response(conn: http.client.HTTPConnection) -> Response:
    r = conn.getresponse()
    data = r.read()
    return Response(r.status, r.getheaders(), data, r.will_close)


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Sends raw bytes, returns everything read until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
        raise AssertionError(f"the server did not close the connection within {timeout} s; got {b''.join(chunks)!r}")


def processes_mentioning(text: str) -> list[str]:
    """`ps` lines (pid, state, command line) of live processes whose command line contains `text`."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    found = []
    me = os.getpid()
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or text not in parts[2]:
            continue
        pid, stat = int(parts[0]), parts[1]
        if pid == me or stat.startswith("Z") or parts[2].startswith("ps "):
            continue
        found.append(line.strip())
    return found


def ns_pids(pid: int) -> list[int]:
    """NSpid of host process `pid`: its pid in each PID namespace it is in, outermost first."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return [int(field) for field in line.split()[1:]]
    return []


def _proc_pids():
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def host_pid(answer: dict) -> int | None:
    """The host pid of the live process that answered `answer` (a handler's `_identity()`: its
    pid in its own PID namespace, and that namespace), None if no such process runs now."""
    if answer["pidns"] == os.readlink("/proc/self/ns/pid"):
        pid = answer["pid"]  # not confined: the host's namespace
        return pid if _pid_alive(pid) else None
    for pid in _proc_pids():
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") != answer["pidns"]:
                continue
            if ns_pids(pid)[-1] == answer["pid"]:
                return pid
        except (OSError, IndexError):
            continue
    return None


def instance_pid(answer: dict) -> int | None:
    """The pid `aether list` and `aether stats` show for the instance that answered `answer`: the
    host pid of the first process of its PID namespace (the handler itself, or for a process
    handler the sandbox's init, its parent); not confined, the handler's own pid."""
    if answer["pidns"] == os.readlink("/proc/self/ns/pid"):
        return answer["pid"]
    return host_pid(dict(answer, pid=1))


def processes_with_marker(marker: str) -> list[int]:
    """Host pids of live (not zombie) processes whose command line contains `marker`."""
    found = []
    for pid in _proc_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        found.append(pid)
    return found


#: What aether itself keeps in a state_dir beside desired.yaml: the functions' uid allocations
#: (confinement: "ID UID" lines, root's alone) and the secret store (`aether secret`, root's alone).
STATE_DIR_COMPANIONS = {
    "identities": (stat.S_IFREG, 0o600),
    "secrets": (stat.S_IFDIR, 0o700),
    # Every function's versions (`aether versions`): 0711, so a confined function reaches its code copy.
    "versions": (stat.S_IFDIR, 0o711),
}


def state_dir_entries(folder: str) -> list[str]:
    """The sorted names in a state_dir other than aether's known companions of desired.yaml
    (STATE_DIR_COMPANIONS), which are checked to be what they should: each is of its type,
    owned by root, with exactly its mode. Anything else (a temporary file, a stray name) is
    returned and so still fails a test expecting ["desired.yaml"]."""
    names = []
    for name in sorted(os.listdir(folder)):
        expected = STATE_DIR_COMPANIONS.get(name)
        if expected is None:
            names.append(name)
            continue
        info = os.lstat(os.path.join(folder, name))
        kind, mode = expected
        if stat.S_IFMT(info.st_mode) != kind or stat.S_IMODE(info.st_mode) != mode or info.st_uid != 0:
            raise AssertionError(f"{folder}/{name}: mode {info.st_mode:o}, owner {info.st_uid}; "
                                 f"expected type {kind:o}, mode {mode:o}, owner root")
    return names


def ring_holders(function_id: str) -> list[int]:
    """Host pids of live processes holding (open or mapped) a ring region of `function_id`: the
    regions are memfds (named /aetherless-<id>-...) handed over with ATTACH, so they exist as
    long as some process holds one, and no longer."""
    label = f"/memfd:/aetherless-{function_id}-"
    holders = []
    for pid in _proc_pids():
        try:
            held = any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(label) for fd in os.listdir(f"/proc/{pid}/fd"))
            if not held:
                with open(f"/proc/{pid}/maps") as f:
                    held = label in f.read()
        except OSError:
            continue
        if held:
            holders.append(pid)
    return holders


def shm_regions(function_id: str) -> list[str]:
    return glob.glob(f"/dev/shm/aetherless-{glob.escape(function_id)}-*")


def wait_until(predicate, timeout: float, interval: float = 0.05):
    """Polls `predicate` until it returns something truthy (returned) or the timeout (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# --------------------------------------------------------------------------- orchestrator


class Orchestrator:
    """One `aether up` process started by a test: `aether up -c CONFIG ARGS`, or without a
    configuration (`config` None: resume the deployed state) `aether up ARGS`."""

    def __init__(self, case: "AetherTestCase", config: str | None, index: int, args=(), command: str = "up"):
        self.case = case
        self.config = config
        self.out_path = os.path.join(case.tmp, f"up-{index}.out")
        self.err_path = os.path.join(case.tmp, f"up-{index}.err")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [aether_bin(), command, *(["-c", config] if config is not None else []), *args],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            cwd=case.tmp,
            start_new_session=True,
        )
        self.killed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stdout(self) -> str:
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log(self) -> str:
        return f"--- aether up stderr ({self.err_path}) ---\n{self.stderr()}--- stdout ---\n{self.stdout()}"

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.alive():
            self.killed = True
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def close_files(self):
        for f in (self._out, self._err):
            try:
                f.close()
            except OSError:
                pass


class AetherTestCase(unittest.TestCase):
    """Base class: a temporary folder, a control socket inside it, and cleanup checks."""

    maxDiff = None

    @classmethod
    def setUpClass(cls):
        if not os.access(AETHER_BIN, os.X_OK):
            raise unittest.SkipTest(
                f"aether binary {AETHER_BIN} not found: run `swift build --product aether` or set AETHER_BIN"
            )
        aether_bin()

    def setUp(self):
        self.test_number = next(_test_counter)
        # Short folder: Unix socket paths are limited to 107 bytes.
        self.tmp = tempfile.mkdtemp(prefix="aeit-", dir="/tmp")
        # Handlers run as their function's own unprivileged user: their folder must be readable
        # by it, as a user's would be (mkdtemp makes it 0700).
        os.chmod(self.tmp, 0o755)
        self.control_socket = os.path.join(self.tmp, "ctl.sock")
        # Never the shared /var/lib/aetherless: every test keeps its deployed state here.
        self.state_dir = os.path.join(self.tmp, "state")
        self.orchestrators: list[Orchestrator] = []
        self.function_ids: list[str] = []
        self.addCleanup(self._cleanup)

    # -- naming and files

    def fid(self, name: str = "fn") -> str:
        """A function id unique to this test (and this test run)."""
        function_id = f"t{os.getpid()}-{self.test_number}-{name}"
        self.function_ids.append(function_id)
        return function_id

    def free_port(self) -> int:
        return free_port()

    def write_file(self, name: str, text: str, executable: bool = False) -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        if executable:
            os.chmod(path, 0o755)
        return path

    def write_common_handler(self, name: str = "handler.py") -> str:
        return self.write_file(name, COMMON_HANDLER)

    def write_config(self, functions: list[dict], name: str = "aether.yaml", orchestrator: dict | None = None) -> str:
        settings = {"control_socket": self.control_socket, "state_dir": self.state_dir}
        settings.update(orchestrator or {})
        return self.write_file(name, render_config(functions, settings))

    def function(self, name: str, handler: str = "handler.py", **extra) -> dict:
        """A function entry with a fresh id and port (extra keys added as given)."""
        entry = {"id": self.fid(name), "trigger_port": self.free_port(), "handler_path": handler}
        entry.update(extra)
        return entry

    # -- aether up

    def start_up(self, config: str | None, *args: str) -> Orchestrator:
        """`aether up -c config ARGS` (`config` None: `aether up ARGS`), not waiting for anything."""
        orch = Orchestrator(self, config, len(self.orchestrators), args)
        self.orchestrators.append(orch)
        return orch

    def start(self, config: str | None, *args: str, command: str = "up") -> Orchestrator:
        """`aether up -c config` (or `aether dev -c config`), waiting until it answers `aether list`
        and has logged "serving"."""
        orch = Orchestrator(self, config, len(self.orchestrators), args, command=command)
        self.orchestrators.append(orch)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if not orch.alive():
                self.fail(f"aether up exited with status {orch.proc.returncode} before it was ready\n{orch.log()}")
            if "serving " in orch.stderr():
                listed = self.aether("list", check=False, timeout=5)
                if listed.returncode == 0:
                    return orch
            if time.monotonic() >= deadline:
                self.fail(f"aether up was not ready within {READY_TIMEOUT} s\n{orch.log()}")
            time.sleep(0.05)

    def start_expect_failure(self, config: str | None, *args: str, timeout: float = 15.0) -> Orchestrator:
        """`aether up` that must exit with status 1 within `timeout`."""
        orch = self.start_up(config, *args)
        rc = orch.wait_exit(timeout)
        if rc is None:
            self.fail(f"aether up did not exit within {timeout} s\n{orch.log()}")
        self.assertEqual(rc, 1, f"aether up should exit 1\n{orch.log()}")
        return orch

    # -- the CLI

    def aether(self, *args, socket: str | None = None, check: bool = True, timeout: float = CLI_TIMEOUT):
        """Runs `aether ARGS --socket <this test's control socket>`; returns the CompletedProcess."""
        cmd = [aether_bin(), *args, "--socket", socket or self.control_socket]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.tmp)
        except subprocess.TimeoutExpired as e:
            self.fail(f"`{' '.join(cmd)}` did not finish within {timeout} s; stdout: {e.stdout!r} stderr: {e.stderr!r}"
                      + self.logs_of())
        if check and result.returncode != 0:
            self.fail(
                f"`{' '.join(cmd)}` exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
                + "".join("\n" + o.log() for o in self.orchestrators)
            )
        return result

    def status(self) -> dict:
        return json.loads(self.aether("list", "--json").stdout)

    def stats(self, function_id: str) -> dict:
        return json.loads(self.aether("stats", function_id, "--json").stdout)

    def instances(self, function_id: str) -> list[dict]:
        return self.stats(function_id)["instances"]

    def wait_serving(self, function_id: str, timeout: float = 10.0, exclude_pids=()) -> dict:
        """Waits until the function has a serving instance whose pid is not in `exclude_pids`."""

        def serving():
            for instance in self.instances(function_id):
                if instance["phase"] == "serving" and instance["pid"] not in exclude_pids:
                    return instance
            return None

        found = wait_until(serving, timeout, 0.1)
        if not found:
            self.fail(f"function {function_id} has no serving instance after {timeout} s: {self.stats(function_id)}"
                      + "".join("\n" + o.log() for o in self.orchestrators))
        return found

    def logs_of(self) -> str:
        return "".join("\n" + o.log() for o in self.orchestrators)

    # -- HTTP

    def get(self, port: int, path: str = "/json", **kw) -> Response:
        return http_request(port, "GET", path, **kw)

    def assertStatus(self, response: Response, status: int, what: str = ""):
        if response.status != status:
            self.fail(f"{what}: expected HTTP {status}, got {response!r}{self.logs_of()}")

    # -- cleanup

    def _cleanup(self):
        problems = []
        for orch in self.orchestrators:
            if orch.alive():
                try:
                    down = subprocess.run(
                        [aether_bin(), "down", "--socket", self.control_socket],
                        capture_output=True, text=True, timeout=20,
                    )
                    if down.returncode != 0 and orch.alive():
                        problems.append(f"aether down exited {down.returncode}: {down.stderr.strip()}")
                except subprocess.TimeoutExpired:
                    problems.append("aether down did not finish within 20 s")
                except OSError as e:
                    problems.append(f"cannot run aether down: {e}")
                if orch.wait_exit(10) is None:
                    problems.append(f"aether up (pid {orch.pid}) still running after aether down; killed")
                    orch.kill()
            orch.close_files()
        # One the test did not start itself (`aether restart`'s successor) may still answer when
        # the test ended early: stop it the orderly way before looking for leftovers.
        if self.orchestrators and os.path.exists(self.control_socket):
            try:
                listed = subprocess.run([aether_bin(), "list", "--socket", self.control_socket],
                                        capture_output=True, text=True, timeout=10)
                if listed.returncode == 0:
                    problems.append("an orchestrator the test did not stop still answered on its control socket")
                    subprocess.run([aether_bin(), "down", "--socket", self.control_socket],
                                   capture_output=True, text=True, timeout=30)
            except (subprocess.TimeoutExpired, OSError) as e:
                problems.append(f"cannot check the control socket: {e}")
        leftovers = wait_until(lambda: not processes_mentioning(self.tmp), 5.0, 0.1)
        if leftovers is None:
            procs = processes_mentioning(self.tmp)
            problems.append("processes left running:\n  " + "\n  ".join(procs))
            for line in procs:
                try:
                    os.kill(int(line.split()[0]), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for function_id in self.function_ids:
            regions = shm_regions(function_id)
            if regions:
                problems.append(f"shared memory left for {function_id}: {regions}")
                for path in regions:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
        log = self.logs_of()
        if os.environ.get("AETHER_IT_KEEP") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)
        if problems:
            self.fail("cleanup found problems:\n" + "\n".join(problems) + log)


# --------------------------------------------------------------------------- load


class Hammer:
    """Background threads sending requests until stopped; records every outcome.

    mode "keepalive": one http.client connection reused (reconnect only after an error);
    mode "fresh": a new connection per request."""

    def __init__(self, port: int, path: str, mode: str):
        self.port = port
        self.path = path
        self.mode = mode
        self.results: list[tuple[float, float, object, object]] = []  # (start, end, status|'exc', value)
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(30)

    def _run(self):
        conn = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            begin = time.monotonic()
            try:
                conn.request("GET", self.path)
                r = read_response(conn)
                value = None
                if r.status == 200:
                    value = r.json().get("value")
                self.results.append((begin, time.monotonic(), r.status, value))
                if self.mode == "fresh" or r.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is recorded
                self.results.append((begin, time.monotonic(), "exc", repr(e)))
                conn.close()
                conn = None
                self.reconnects += 1
        if conn is not None:
            conn.close()
