#!/usr/bin/env python3
"""Fault injection against the real `aether` binary (issue 13, "Proof").

Every scenario starts its own orchestrator (a private folder with its control socket, state_dir,
snapshot_dir and handler files; its own free ports and function ids), runs a healthy function
beside the faulty ones, and a background prober asks the healthy one for an answer every 50 ms
for the whole scenario. Then it injects one kind of fault several times, each time checking the
documented outcome:

- the orchestrator never crashes or stalls: it stays alive, the prober only ever sees 200s
  answered within PROBE_STALL seconds, the control socket answers;
- the faulty request gets the documented answer: 502 for a handler that crashes mid-request or
  answers with a status, header or message HTTP or the protocol does not allow, or breaks its
  rings; 504 for one over timeout_ms; 503 with Retry-After while no instance can start;
  413/431/400 for bad client input; every answer the orchestrator makes itself is JSON
  {"error": ...};
- the broken instance is replaced (the next request is served by another process);
- nothing leaks: no zombies under the orchestrator, `aether down` stops it with status 0, no
  /dev/shm/aetherless-<id>-* of the scenario's functions and no process whose command line
  mentions the scenario's folder are left, the orchestrator's log holds no Swift runtime
  trap, and it holds at most a few more descriptors than when it first served (or one per two
  faults injected).

Instances are told apart by their number (the gateway's x-aether-instance, or the
AETHER_INSTANCE a process handler reports), not by the PID a handler sees: a confined handler is
PID 1 of its own PID namespace. Faults injected from outside (kill -9, SIGSTOP) go to the host PID
`aether stats` gives for that number.

Anything else is an "unexpected outcome", printed with what was injected, what happened and the
orchestrator's log lines about it. The run ends with one table (fault, faults injected,
requests sent, unexpected outcomes) and a total line; the exit status is 1 if any outcome was
unexpected.

Runs inside a private network namespace (loopback only) and a private mount namespace (the
full-disk scenario mounts a small tmpfs there); without them it re-executes itself under
`unshare --net --mount --propagation private` (root needed, as for `aether up`).

    python3 tests/faults/run.py [--quick] [--only NAME[,NAME...]] [--list] [--keep] [-v]

Environment: AETHER_BIN (default <repo>/.build/debug/aether; copied once per run, so a
rebuild during the run changes nothing), AETHER_PYTHON_SDK (default <repo>/sdk/python),
AETHER_FAULTS_KEEP=1 (= --keep).
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import handlers  # noqa: E402

AETHER_BIN = os.environ.get("AETHER_BIN") or os.path.join(REPO, ".build", "debug", "aether")
SDK_DIR = os.environ.get("AETHER_PYTHON_SDK") or os.path.join(REPO, "sdk", "python")
PYTHON = "/usr/bin/python3"
NAMESPACE_MARK = "AETHER_FAULTS_NAMESPACED"

READY_TIMEOUT = 40.0
PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 10.0
#: A probe answered later than this is a stall of the orchestrator.
PROBE_STALL = 3.0
#: Words an orchestrator log must never contain (Swift runtime traps, crashes).
TRAP_WORDS = ("Swift runtime failure", "Fatal error", "Precondition failed", "Assertion failed", "*** Signal",
              "Program crashed", "💣")


# --------------------------------------------------------------------------- HTTP


class Resp:
    """One HTTP exchange: the status (None when there was no answer), headers, body, or the error."""

    def __init__(self, status=None, headers=None, body=b"", error=None, elapsed=0.0, will_close=False):
        self.status = status
        self.headers = headers or {}
        self.body = body
        self.error = error
        self.elapsed = elapsed
        self.will_close = will_close

    def json(self):
        try:
            return json.loads(self.body)
        except (ValueError, TypeError):
            return None

    def error_text(self) -> str | None:
        doc = self.json()
        if isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"]:
            return doc["error"]
        return None

    def pid(self):
        """Which instance answered: its number (the gateway's x-aether-instance, or the
        AETHER_INSTANCE a process handler reports), else the PID the handler reports (a confined
        handler is PID 1 of its own PID namespace: Scenario.host_pid finds its host PID)."""
        if self.headers.get("x-aether-instance"):
            return self.headers["x-aether-instance"]
        doc = self.json()
        if not isinstance(doc, dict):
            return None
        return doc.get("instance") if doc.get("instance") is not None else doc.get("pid")

    def __str__(self):
        if self.status is None:
            return f"no answer after {self.elapsed:.2f} s ({self.error})"
        body = self.body[:240]
        return f"HTTP {self.status} after {self.elapsed:.2f} s, body {body!r}"


def http_request(port, path="/", method="GET", body=None, headers=None, timeout=15.0) -> Resp:
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data, None, time.monotonic() - began,
                    r.will_close)
    except Exception as e:  # noqa: BLE001 - every failure is an outcome
        return Resp(None, None, b"", f"{type(e).__name__}: {e}", time.monotonic() - began)
    finally:
        conn.close()


def raw_exchange(port, data: bytes, timeout=5.0):
    """Sends bytes, returns (everything read, closed by the server, error or None)."""
    chunks = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            try:
                s.sendall(data)
            except OSError:
                pass  # answered and closed before it read everything: what it answered is read below
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                except ConnectionResetError:
                    # Closed with our unread bytes in its buffer: the kernel resets instead of a FIN.
                    return b"".join(chunks), True, None
                if not chunk:
                    return b"".join(chunks), True, None
                chunks.append(chunk)
            return b"".join(chunks), False, None
    except OSError as e:
        return b"".join(chunks), False, f"{type(e).__name__}: {e}"


def status_of(raw: bytes):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# --------------------------------------------------------------------------- processes


def process_lines_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    me = os.getpid()
    found = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or text not in parts[2]:
            continue
        if int(parts[0]) == me or parts[1].startswith("Z") or parts[2].startswith("ps "):
            continue
        found.append(line.strip())
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def zombie_children(pid: int) -> list[int]:
    zombies = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children = f.read().split()
        except OSError:  # gone meanwhile (ENOENT, or ESRCH on the read)
            continue
        for child in children:
            try:
                with open(f"/proc/{child}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                        zombies.append(int(child))
            except OSError:
                pass
    return zombies


def last_words(log: str) -> list[str]:
    """What a crashed orchestrator said: its runtime failure and the crashed thread's first frames
    (the Swift backtracer's report), else its last lines."""
    lines = [line for line in log.splitlines() if line.strip()]
    picked = [line for line in lines if any(word in line for word in TRAP_WORDS)][:3]
    for i, line in enumerate(lines):
        if " crashed:" in line:
            picked += lines[i:i + 5]
            break
    return picked or lines[-12:]


def descriptors(pid: int):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def descriptor_kinds(pid: int) -> dict:
    """What a process's descriptors point at, counted by kind (socket, pipe, /memfd, ...)."""
    kinds = {}
    try:
        for n in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{n}")
            except OSError:
                continue
            kind = target.split(":")[0] if ":" in target else target.split(" ")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
    except OSError:
        pass
    return kinds


def shm_regions(function_id: str) -> list[str]:
    return glob.glob(f"/dev/shm/aetherless-{glob.escape(function_id)}-*")


def yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
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


# --------------------------------------------------------------------------- the run


class Run:
    def __init__(self, args):
        self.quick = args.quick
        self.verbose = args.verbose
        self.keep = args.keep or os.environ.get("AETHER_FAULTS_KEEP") == "1"
        # Short: Unix socket paths (control and handler sockets) are limited to 107 bytes.
        self.root = tempfile.mkdtemp(prefix="aeflt-", dir="/tmp")
        # Handlers run as their function's own unprivileged user: they must be able to read
        # their folders (mkdtemp makes them 0700), as a user's would be.
        os.chmod(self.root, 0o755)
        self.binary = os.path.join(self.root, "aether")
        shutil.copy2(AETHER_BIN, self.binary)
        # The sandbox helper `aether up` looks for next to its binary.
        helper = os.path.join(os.path.dirname(AETHER_BIN), "aether-sandbox")
        if os.path.exists(helper):
            shutil.copy2(helper, os.path.join(self.root, "aether-sandbox"))
        subprocess.run([self.binary, "--version"], check=True, capture_output=True, timeout=20)
        self.env = dict(os.environ)
        # The copy is outside the source tree: tell it where the Python SDK is.
        self.env["AETHER_PYTHON_SDK"] = SDK_DIR
        self.env.pop("AETHER_CONTROL_SOCKET", None)
        self.env.pop("AETHER_STATE_DIR", None)
        self.tag = f"f{os.getpid() % 100000}"
        self.counter = 0

    def log(self, text):
        if self.verbose:
            print(f"  [{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def cleanup(self):
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


class Orch:
    """One `aether up` of a scenario."""

    def __init__(self, scn: "Scenario", args: list[str]):
        self.scn = scn
        n = len(scn.orchs)
        self.err_path = os.path.join(scn.tmp, f"up-{n}.err")
        self.out_path = os.path.join(scn.tmp, f"up-{n}.out")
        self.ready_file = os.path.join(scn.tmp, f"ready-{n}")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.args = args
        self.proc = subprocess.Popen(
            [scn.run.binary, "up", *args, "--ready-file", self.ready_file],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err, cwd=scn.tmp, env=scn.run.env,
            start_new_session=True)
        self.expected_exit = False
        self.killed = False
        self.started = time.monotonic()
        self.descriptors_at_start = None

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stderr(self) -> str:
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=READY_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.ready_file):
                return True
            if not self.alive():
                return False
            time.sleep(0.05)
        return False

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill9(self):
        self.killed = True
        self.expected_exit = True
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def close(self):
        for f in (self._out, self._err):
            try:
                f.close()
            except OSError:
                pass


class Prober:
    """Asks the healthy function for an answer every PROBE_INTERVAL; anything but a 200 within
    PROBE_STALL is an unexpected outcome of the scenario."""

    def __init__(self, scn: "Scenario", port: int):
        self.scn = scn
        self.port = port
        self.paused = threading.Event()
        self.stopped = threading.Event()
        self.sent = 0
        self.failures = 0
        self.reported = 0
        self.slowest = 0.0
        self.thread = threading.Thread(target=self._run, name="prober", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopped.set()
        self.thread.join(PROBE_TIMEOUT + 5)
        if self.failures > self.reported:
            self.scn.unexpected_outcome("the healthy function (background prober)",
                                        f"{self.failures - self.reported} more failed or late probes (not listed)")

    def pause(self):
        """Stops probing (the scenario is about to stop the orchestrator on purpose); a probe
        already on its way is not counted."""
        self.paused.set()

    def resume(self):
        self.paused.clear()

    def _run(self):
        while not self.stopped.is_set():
            if self.paused.is_set():
                time.sleep(0.02)
                continue
            r = http_request(self.port, "/", timeout=PROBE_TIMEOUT)
            if self.paused.is_set():  # the scenario stopped the orchestrator meanwhile
                continue
            self.sent += 1
            self.scn.count_requests(1)
            self.slowest = max(self.slowest, r.elapsed)
            current = self.scn.orch
            if r.status is None:  # the orchestrator may be dying: its death is the outcome
                wait_until(lambda: not current.alive(), 6.0, 0.1)
            if r.status != 200 or r.elapsed > PROBE_STALL:
                if self.scn.dead or not current.alive() or self.paused.is_set():
                    self.paused.set()  # the orchestrator died: the scenario reports that once
                    continue
                self.failures += 1
                if self.failures <= 5:
                    self.reported += 1
                    self.scn.unexpected_outcome(
                        "the healthy function (background prober)",
                        f"while {self.scn.current or 'idle'}: {r}")
            time.sleep(PROBE_INTERVAL)


class Scenario:
    """One fault kind: its folder, orchestrator(s), functions, counters and checks."""

    def __init__(self, run: Run, key: str, title: str):
        self.run = run
        self.key = key
        self.title = title
        run.counter += 1
        self.index = run.counter
        self.tmp = os.path.join(run.root, f"s{self.index}")
        os.makedirs(self.tmp)
        os.chmod(self.tmp, 0o755)
        self.control_socket = os.path.join(self.tmp, "ctl.sock")
        self.state_dir = os.path.join(self.tmp, "state")
        self.snapshot_dir = os.path.join(self.tmp, "images")
        self.orchs: list[Orch] = []
        self.fids: list[str] = []
        self.injected = 0
        self.requests = 0
        self.unexpected: list[tuple[str, str, str]] = []
        self.prober: Prober | None = None
        self.current = ""
        self._lock = threading.Lock()
        self.began = time.monotonic()
        self.elapsed = 0.0
        self.rounds = 1 if run.quick else 3
        self.dead = False
        self.finishing = False
        self.probe_fn = None
        #: False where the scenario deploys more functions after it served (more descriptors).
        self.descriptor_check = True

    # -- bookkeeping

    def count_requests(self, n=1):
        with self._lock:
            self.requests += n

    def inject(self, what: str):
        self.abort_if_dead()
        self.injected += 1
        self.current = what
        self.run.log(f"{self.key}: inject {what}")

    def unexpected_outcome(self, what: str, detail: str, log_filter: str | None = None):
        tail = self.log_excerpt(log_filter)
        with self._lock:
            self.unexpected.append((what, detail, tail))
        self.run.log(f"{self.key}: UNEXPECTED {what}: {detail}")

    def expect(self, ok, what: str, detail: str = "", log_filter: str | None = None) -> bool:
        if not ok:
            self.abort_if_dead()  # a dead orchestrator explains it: reported once, the scenario ends
            self.unexpected_outcome(what, detail, log_filter)
        return bool(ok)

    def log_excerpt(self, needle: str | None = None, lines=12) -> str:
        """The last lines of the orchestrator's log that contain `needle` (none without one)."""
        if not self.orchs or not needle:
            return ""
        picked = [line for line in self.orchs[-1].stderr().splitlines() if needle in line]
        return "\n".join(picked[-lines:])

    @property
    def orch(self) -> Orch:
        return self.orchs[-1]

    # -- files and functions

    def fid(self, name: str) -> str:
        function_id = f"{self.run.tag}-{self.index}-{name}"
        self.fids.append(function_id)
        return function_id

    def write(self, name: str, text: str, executable=False) -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        if executable:
            os.chmod(path, 0o755)
        return path

    def fn(self, name: str, handler: str, **extra) -> dict:
        entry = {"id": self.fid(name), "trigger_port": free_port(), "handler_path": handler}
        entry.update(extra)
        return entry

    def settings(self, extra: dict | None = None) -> dict:
        s = {"control_socket": self.control_socket, "state_dir": self.state_dir, "snapshot_dir": self.snapshot_dir,
             "restore_timeout_ms": 100}
        s.update(extra or {})
        return s

    def config(self, functions: list[dict], name="aether.yaml", orchestrator: dict | None = None) -> str:
        return self.write(name, render_config(functions, self.settings(orchestrator)))

    def healthy(self) -> dict:
        self.write("healthy.py", handlers.HEALTHY)
        return self.fn("ok", "healthy.py", max_instances=2)

    # -- the orchestrator

    def up(self, functions: list[dict], orchestrator: dict | None = None, probe: dict | None = None) -> Orch:
        """`aether up -c` with these functions; waits until everything serves; starts the prober
        on `probe` (a function of the list)."""
        config = self.config(functions, orchestrator=orchestrator)
        return self.up_args(["-c", config], probe)

    def up_args(self, args: list[str], probe: dict | None = None) -> Orch:
        orch = Orch(self, args)
        self.orchs.append(orch)
        if not orch.wait_ready():
            raise ScenarioError(f"aether up {' '.join(args)} did not become ready:\n{orch.stderr()[-3000:]}")
        orch.descriptors_at_start = descriptors(orch.pid)
        self.run.log(f"{self.key}: orchestrator {orch.pid} ready in {time.monotonic() - orch.started:.2f} s, "
                     f"{orch.descriptors_at_start} descriptors")
        if probe is not None:
            self.probe_fn = probe
            if self.prober is None:
                self.prober = Prober(self, probe["trigger_port"]).start()
            else:
                self.prober.resume()
        return orch

    def aether(self, *args, timeout=60.0, socket_path=None) -> subprocess.CompletedProcess:
        cmd = [self.run.binary, *args, "--socket", socket_path or self.control_socket]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.tmp, env=self.run.env)
        except subprocess.TimeoutExpired as e:
            self.unexpected_outcome(f"`aether {' '.join(args)}`", f"did not finish within {timeout} s (stalled)")
            return subprocess.CompletedProcess(cmd, -1, e.stdout or "", e.stderr or "")

    def stats(self, function_id: str) -> dict:
        self.abort_if_dead()
        result = self.aether("stats", function_id, "--json", timeout=20)
        if result.returncode != 0:
            self.unexpected_outcome("the control socket", f"`aether stats {function_id}` exited {result.returncode}: "
                                    f"{result.stderr.strip()}")
            return {}
        return json.loads(result.stdout)

    def instances(self, function_id: str) -> list[dict]:
        return self.stats(function_id).get("instances", [])

    def serving_pids(self, function_id: str) -> list[int]:
        return [i["pid"] for i in self.instances(function_id) if i.get("phase") == "serving"]

    def host_pid(self, fn: dict, who):
        """The host PID of the instance `who` (Resp.pid()) of `fn`, from `aether stats`."""
        if who is None:
            return None
        for instance in self.instances(fn["id"]):
            if str(instance.get("number")) == str(who):
                return instance.get("pid")
        return None

    def kill_instance(self, fn: dict, who, sig=signal.SIGKILL):
        """Sends `sig` to the instance `who` of `fn` from outside; returns its host PID."""
        pid = self.host_pid(fn, who)
        if pid and pid > 1:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            return pid
        self.unexpected_outcome(f"{fn['id']}: the suite", f"instance {who} is not in aether stats")
        return None

    def wait_serving(self, function_id: str, exclude=(), timeout=15.0):
        def found():
            pids = [p for p in self.serving_pids(function_id) if p not in exclude]
            return pids[0] if pids else None
        return wait_until(found, timeout, 0.1)

    # -- requests

    def get(self, port, path="/", **kw) -> Resp:
        self.count_requests(1)
        return http_request(port, path, **kw)

    def raw(self, port, data: bytes, timeout=5.0):
        self.count_requests(1)
        return raw_exchange(port, data, timeout)

    def answer_in_background(self, port, path, **kw):
        box = {}

        def call():
            box["r"] = self.get(port, path, **kw)

        t = threading.Thread(target=call, daemon=True)
        t.start()
        return t, box

    # -- common checks

    def expect_orchestrator_error(self, r: Resp, status, what: str, log_filter=None, retry_after=False) -> bool:
        statuses = status if isinstance(status, (set, tuple, list)) else {status}
        self.settle(r)
        if not self.expect(r.status in statuses, what, f"expected HTTP {'/'.join(map(str, sorted(statuses)))}, "
                           f"got {r}", log_filter):
            return False
        if r.status == 200:
            return True
        ok = self.expect(r.error_text() is not None, what, f"the orchestrator's {r.status} is not JSON "
                         f"{{\"error\": ...}}: {r}", log_filter)
        if retry_after and r.status == 503:
            ok &= self.expect("retry-after" in r.headers, what, f"503 without Retry-After: {r.headers}", log_filter)
        return ok

    def expect_replaced(self, fn: dict, old_pid, what: str, path="/ok", timeout=15.0):
        """The function answers 200 again, from another process than `old_pid`."""
        port = fn["trigger_port"]
        last = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.get(port, path, timeout=10)
            if last.status == 200 and (old_pid is None or last.pid() != old_pid):
                return last.pid()
            if last.status == 200 and last.pid() == old_pid:
                self.unexpected_outcome(what, f"not replaced: process {old_pid} still answers after the fault: {last}",
                                        fn["id"])
                return None
            time.sleep(0.1)
        self.unexpected_outcome(what, f"not served again within {timeout} s; last answer: {last}", fn["id"])
        return None

    def current_pid(self, fn: dict, path="/ok"):
        self.abort_if_dead()
        r = self.get(fn["trigger_port"], path, timeout=15)
        if not self.expect(r.status == 200, f"{fn['id']} before the fault", f"expected 200, got {r}", fn["id"]):
            return None
        return r.pid()

    def check_alive(self, what: str) -> bool:
        for orch in self.orchs:
            if not orch.alive() and not orch.expected_exit:
                orch.expected_exit = True  # reported once
                self.dead = True
                last = last_words(orch.stderr())
                self.unexpected_outcome("the orchestrator", f"aether up (pid {orch.pid}) died (exit status "
                                        f"{orch.proc.returncode}) during {what}; its log ({orch.err_path}):\n    "
                                        + "\n    ".join(line.strip()[:240] for line in last))
                return False
        return not self.dead

    def guard(self, step, *args, **kw):
        """Runs one injection; if the orchestrator dies in it (reported once), starts it again from
        the same configuration, so the remaining injections still run (and find other crashes)."""
        try:
            return step(*args, **kw)
        except OrchestratorDied:
            if self.prober is not None:
                self.prober.pause()
            self.dead = False
            self.run.log(f"{self.key}: the orchestrator died; starting it again")
            self.up_args(self.orch.args, probe=self.probe_fn)
            return None

    def settle(self, r: "Resp"):
        """After a request that got no answer at all: if the orchestrator is dying (the Swift
        backtracer takes seconds), wait for it, so its death is what gets reported."""
        if r.status is None and not self.finishing:
            wait_until(lambda: any(not o.alive() and not o.expected_exit for o in self.orchs), 6.0, 0.1)
            self.abort_if_dead()

    def abort_if_dead(self):
        """Ends the scenario once its orchestrator died: what follows would only repeat that."""
        if self.finishing:
            return
        if self.dead or not self.check_alive(self.current or "the scenario"):
            raise OrchestratorDied()

    # -- the end of a scenario

    def finish(self):
        self.current = "the leak checks"
        self.check_alive("the scenario")
        self.finishing = True
        live = [o for o in self.orchs if o.alive()]
        for orch in live:
            zombies = wait_until(lambda o=orch: not zombie_children(o.pid), 4.0, 0.2)
            if zombies is None:
                self.unexpected_outcome("leaks", f"zombies under the orchestrator {orch.pid}: "
                                        f"{zombie_children(orch.pid)}")
        self.check_alive("the scenario")
        if self.prober is not None:
            self.prober.stop()
        time.sleep(1.2)  # connections closed after an error answer linger for up to 1 s
        for orch in live:
            if orch.alive() and orch.descriptors_at_start is not None:
                end = descriptors(orch.pid)
                self.run.log(f"{self.key}: orchestrator {orch.pid}: {orch.descriptors_at_start} descriptors when it "
                             f"served, {end} at the end")
                # Nothing accumulates: a few descriptors more (a restore slot, a pool) are fine,
                # one per injected fault is a leak.
                slack = max(4, self.injected // 2)
                if self.descriptor_check and end is not None and end - orch.descriptors_at_start > slack:
                    self.unexpected_outcome("leaks", f"the orchestrator {orch.pid} holds {end} descriptors, "
                                            f"{end - orch.descriptors_at_start} more than when it served "
                                            f"({self.injected} faults injected): "
                                            f"{descriptor_kinds(orch.pid)}")
        for orch in live:
            if not orch.alive():
                continue
            down = self.aether("down", timeout=30)
            self.expect(down.returncode == 0, "`aether down`", f"exited {down.returncode}: {down.stderr.strip()}")
            status = orch.wait_exit(20)
            orch.expected_exit = True
            if not self.expect(status == 0, "`aether down`", f"aether up {orch.pid} ended with {status} "
                               f"(None: still running 20 s after down)"):
                orch.kill9()
        for orch in self.orchs:
            if orch.alive():
                orch.kill9()
            orch.close()
        left = wait_until(lambda: not process_lines_mentioning(self.tmp), 6.0, 0.1)
        if left is None:
            procs = process_lines_mentioning(self.tmp)
            self.unexpected_outcome("leaks", "processes left running after aether down:\n    " + "\n    ".join(procs))
            for line in procs:
                try:
                    os.kill(int(line.split()[0]), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        died = [o.pid for o in self.orchs if o.expected_exit and not o.killed and o.proc.returncode not in (0, 1)]
        for function_id in self.fids:
            regions = shm_regions(function_id)
            # A crashed orchestrator's regions stay until the next `aether up` (by design): its
            # death is the outcome already reported.
            regions = [r for r in regions if not any(f"-p{pid}-" in r for pid in died)] + [
                r for r in regions if any(f"-p{pid}-" in r for pid in died) and os.unlink(r)]
            if regions:
                self.unexpected_outcome("leaks", f"shared memory left for {function_id}: {regions}")
                for path in regions:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
        for orch in self.orchs:
            if orch.expected_exit and orch.proc.returncode not in (0, None, -9, 1):
                continue  # died: reported with its log by check_alive
            err = orch.stderr()
            for word in TRAP_WORDS:
                if word in err:
                    lines = [line for line in err.splitlines() if word in line][:5]
                    self.unexpected_outcome("the orchestrator", f"its log (pid {orch.pid}) has {word!r}: {lines}")
        self.elapsed = time.monotonic() - self.began


class ScenarioError(Exception):
    """The scenario could not go on (its setup failed): counted as one unexpected outcome."""


class OrchestratorDied(Exception):
    """The scenario's orchestrator died (reported once, with its last words); the scenario ends."""


# --------------------------------------------------------------------------- scenarios

SCENARIOS = []


def scenario(key: str, title: str, quick=True):
    def register(fn):
        SCENARIOS.append((key, title, fn, quick))
        return fn
    return register


def hostile(s: Scenario, name: str, **extra) -> dict:
    if not os.path.exists(os.path.join(s.tmp, "hostile.py")):
        s.write("hostile.py", handlers.HOSTILE)
    settings = {"max_instances": 1, "timeout_ms": 8000}
    settings.update(extra)
    return s.fn(name, "hostile.py", **settings)


def fault_then_replaced(s: Scenario, fn: dict, label: str, path: str, status, **kw):
    """One injection through a request path: the answer must be `status` (an orchestrator error),
    and another process must serve the function afterwards."""
    return s.guard(_fault_then_replaced, s, fn, label, path, status, **kw) or Resp(error="the orchestrator died")


def _fault_then_replaced(s: Scenario, fn: dict, label: str, path: str, status, **kw):
    old = s.current_pid(fn)
    s.inject(label)
    r = s.get(fn["trigger_port"], path, timeout=kw.get("timeout", 20))
    ok = s.expect_orchestrator_error(r, status, label, fn["id"])
    limit = kw.get("within")
    if ok and limit is not None:
        s.expect(r.elapsed <= limit, label, f"answered after {r.elapsed:.2f} s, expected within {limit} s")
    s.expect_replaced(fn, old, label)
    s.check_alive(label)
    return r


@scenario("crash", "handler crashes mid-request (os._exit, SIGKILL, SIGSEGV, abort, kill -9 from outside)")
def s_crash(s: Scenario):
    ok = s.healthy()
    a = hostile(s, "crash")
    many = hostile(s, "crashc", concurrency=4)
    s.up([ok, a, many], probe=ok)
    ignored = 0
    for _ in range(s.rounds):
        for path, label in (("/exit", "os._exit(3)"), ("/sigkill", "SIGKILL to itself"),
                            ("/segv", "SIGSEGV (ctypes.string_at(0))"), ("/abort", "abort() (SIGABRT)")):
            if path == "/sigkill":
                ignored += 1 if s.guard(self_kill_ignored, s, a) else 0
                continue
            fault_then_replaced(s, a, label, path, 502)
        # SIGKILL from outside while a request is in flight.
        old = s.current_pid(a)
        t, box = s.answer_in_background(a["trigger_port"], "/sleep?s=5")
        time.sleep(0.5)
        s.inject("kill -9 of the instance from outside, request in flight")
        if old:
            s.kill_instance(a, old)
        t.join(20)
        s.expect_orchestrator_error(box.get("r", Resp(error="no answer")), 502, "kill -9 from outside", a["id"])
        s.expect_replaced(a, old, "kill -9 from outside")
    # Several requests in flight on the instance that crashes: every one gets its 502.
    old = s.current_pid(many)
    waiting = [s.answer_in_background(many["trigger_port"], "/sleep?s=4") for _ in range(3)]
    time.sleep(0.5)
    s.inject("os._exit with 3 more requests in flight (concurrency 4)")
    r = s.get(many["trigger_port"], "/exit", timeout=20)
    s.expect_orchestrator_error(r, 502, "crash with requests in flight", many["id"])
    for t, box in waiting:
        t.join(20)
        s.expect_orchestrator_error(box.get("r", Resp(error="no answer")), 502,
                                    "a request in flight on a crashed instance", many["id"])
    s.expect_replaced(many, old, "crash with requests in flight")
    crashes = s.stats(a["id"]).get("stats", {}).get("crashes", 0)
    s.expect(crashes >= 5 * s.rounds - ignored, "crash statistics", f"aether stats counts {crashes} crashes, "
             f"{5 * s.rounds - ignored} were injected")


def self_kill_ignored(s: Scenario, a: dict) -> bool:
    """A confined handler is PID 1 of its own PID namespace: the kernel ignores a SIGKILL it sends
    itself (the hostile handler then answers 409 saying so; kill -9 from outside is injected
    below). True if that is what happened, and the instance serves on."""
    old = s.current_pid(a)
    s.inject("SIGKILL to itself")
    r = s.get(a["trigger_port"], "/sigkill", timeout=20)
    s.settle(r)
    if r.status != 409 or "was ignored: PID 1 " not in (r.error_text() or ""):
        s.expect_orchestrator_error(r, 502, "SIGKILL to itself", a["id"])
        s.expect_replaced(a, old, "SIGKILL to itself")
        return False
    r = s.get(a["trigger_port"], "/ok")
    s.expect(r.status == 200 and r.pid() == old, "SIGKILL to itself (ignored by a PID-namespace init)",
             f"the instance should serve on: {r}", a["id"])
    return True


@scenario("hang", "handler hangs past timeout_ms (sleep, busy loop, deadlock, SIGSTOP)")
def s_hang(s: Scenario):
    ok = s.healthy()
    a = hostile(s, "hang", timeout_ms=1000)
    s.up([ok, a], probe=ok)
    for _ in range(s.rounds):
        for path, label in (("/sleep?s=60", "sleep 60 s"), ("/spin?s=60", "busy loop 60 s"),
                            ("/deadlock", "deadlock on a lock")):
            r = fault_then_replaced(s, a, label, path, 504, within=4.0)
            if r.status == 504:
                s.expect("timeout_ms 1000" in (r.error_text() or ""), label, f"the 504 does not name timeout_ms: {r}")
        old = s.current_pid(a)
        t, box = s.answer_in_background(a["trigger_port"], "/sleep?s=0.3")
        time.sleep(0.1)
        s.inject("SIGSTOP of the instance from outside, request in flight")
        host = s.kill_instance(a, old, signal.SIGSTOP) if old else None
        t.join(20)
        s.expect_orchestrator_error(box.get("r", Resp(error="no answer")), 504, "SIGSTOP", a["id"])
        s.expect_replaced(a, old, "SIGSTOP")
        if host:
            s.expect(wait_until(lambda: not alive(host), 6.0), "SIGSTOP", f"the stopped instance {host} is still there")


@scenario("oom", "handler over memory_limit_mb (OOM kill)")
def s_oom(s: Scenario):
    ok = s.healthy()
    a = hostile(s, "oom", memory_limit_mb=48)
    s.up([ok, a], probe=ok)
    for _ in range(s.rounds):
        for path, label in (("/oom?mb=400", "one 400 MB allocation at 48 MB"),
                            ("/oom?mb=400&how=gradual", "1 MB allocations up to 400 MB at 48 MB")):
            r = fault_then_replaced(s, a, label, path, 502, timeout=30)
            if r.status == 502:
                s.expect("OOM" in (r.error_text() or ""), label, f"the 502 does not say the OOM killer stopped it: {r}")


def forked_alive(s: "Scenario", fn: dict) -> list[int]:
    """Host PIDs of processes running the hostile handler's code that are not a serving instance
    of `fn`: what a dead instance forked (a fork keeps its parent's command line). PIDs the
    handler notes itself are no use here: a confined handler sees its own PID namespace."""
    serving = set(s.serving_pids(fn["id"]))
    found = []
    for line in process_lines_mentioning(os.path.join(s.tmp, "hostile.py")):
        pid = int(line.split()[0])
        if pid not in serving:
            found.append(pid)
    return found


FORK_KINDS = [
    ("plain", 100, "100 children, then the instance exits"),
    ("daemon", 50, "50 daemons (setsid + double fork, re-parented), then the instance exits"),
    ("chain", 20, "20 chains of processes that fork their successor and exit, then the instance exits"),
]


@scenario("fork", "fork bomb-ish: 100 children, daemons, self-replacing chains, zombies")
def s_fork(s: Scenario):
    ok = s.healthy()
    a = hostile(s, "fork", memory_limit_mb=256)
    s.up([ok, a], probe=ok)
    port = a["trigger_port"]
    for _ in range(max(1, s.rounds - 1)):
        for how, n, label in FORK_KINDS:
            folder = fork_folder(s, f"{how}-")
            fault_then_replaced(s, a, label, f"/fork?n={n}&how={how}&then=exit&dir={folder}", 502, timeout=30)
            s.guard(forks_gone, s, a, folder, label)
        s.guard(fork_zombies, s, a)
    # Daemons of an instance that goes on serving: `aether down` must stop them (the leak checks).
    folder = fork_folder(s, "kept-")
    s.inject("50 daemons left running by an instance that serves on (until aether down)")
    r = s.get(port, f"/fork?n=50&how=daemon&dir={folder}", timeout=30)
    s.settle(r)
    s.expect(r.status == 200, "daemons of a serving instance", f"expected the handler's 200: {r}", a["id"])
    r = s.get(port, "/ok")
    s.expect(r.status == 200, "daemons of a serving instance", f"the instance stopped serving: {r}", a["id"])


def fork_folder(s: Scenario, prefix: str) -> str:
    """A folder the handler, running as its own user, can note PIDs in."""
    folder = tempfile.mkdtemp(prefix=prefix, dir=s.tmp)
    os.chmod(folder, 0o777)
    return folder


def forks_gone(s: Scenario, a: dict, folder: str, label: str):
    s.run.log(f"fork: {len(os.listdir(folder))} processes noted for {label}")
    if wait_until(lambda: not forked_alive(s, a), 6.0, 0.2) is None:
        left = forked_alive(s, a)
        s.unexpected_outcome(label, f"{len(left)} processes the dead instance forked still run 6 s after it died "
                             f"(e.g. {left[:5]})")
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if wait_until(lambda: not zombie_children(s.orch.pid), 5.0, 0.1) is None:
        s.unexpected_outcome(label, f"zombies under the orchestrator 5 s later: {zombie_children(s.orch.pid)[:10]}")
    s.check_alive(label)


def fork_zombies(s: Scenario, a: dict):
    """200 children that exit at once and are never waited for; then the instance is killed from
    outside: its zombies are re-parented to the orchestrator, which must reap them."""
    port = a["trigger_port"]
    folder = fork_folder(s, "zombie-")
    old = s.current_pid(a)
    label = "200 children never waited for, then kill -9 of the instance"
    s.inject(label)
    r = s.get(port, f"/fork?n=200&how=zombie&dir={folder}", timeout=30)
    s.settle(r)
    s.expect(r.status == 200, label, f"expected the handler's 200 (its zombies are its own business): {r}", a["id"])
    host = s.host_pid(a, old)
    if host:
        s.run.log(f"fork: {len(zombie_children(host))} zombies under the instance {host}")
        os.kill(host, signal.SIGKILL)
    s.expect_replaced(a, old, label)
    if wait_until(lambda: not zombie_children(s.orch.pid), 5.0, 0.1) is None:
        s.unexpected_outcome(label, f"zombies under the orchestrator 5 s later: {len(zombie_children(s.orch.pid))}")
    s.check_alive(label)


BAD_STATUSES = [(100, "100"), (101, "101"), (103, "103"), (199, "199"), (600, "600"), (0, "0"), (-1, "-1 (0xffff)"),
                (1000, "1000"), (65535, "65535 (huge)")]


@scenario("status", "statuses 100/101/103/199/600/0/-1/1000/65535 written on the response ring")
def s_status(s: Scenario):
    ok = s.healthy()
    a = hostile(s, "status")
    s.up([ok, a], probe=ok)
    for code, label in BAD_STATUSES:
        r = fault_then_replaced(s, a, f"status {label}", f"/status?code={code}", 502)
        s.expect(r.status != code, f"status {label}", "the status went out to the client")


BAD_HEADERS = [
    (b"X-Bad", b"a\rb", "CR in a value"),
    (b"X-Bad", b"a\nb", "LF in a value"),
    (b"X-Bad", b"a\r\nSet-Cookie: evil=1", "CRLF injection in a value"),
    (b"X-Bad", b"a\x00b", "NUL in a value"),
    (b"X-Bad", b"a\x01b", "0x01 in a value"),
    (b"X-Bad", b"\x1b[31mred", "ESC in a value"),
    (b"X-Bad", b"a\x7fb", "DEL in a value"),
    (b"X-Bad\r\nX-Evil", b"1", "CRLF in a name"),
    (b"X-Bad\n", b"1", "LF in a name"),
    (b"X-B\x00ad", b"1", "NUL in a name"),
    (b"X Bad", b"1", "space in a name"),
    (b"X-Bad:", b"1", "colon in a name"),
    (b"", b"1", "empty name"),
    (b"X-\xc3\xa9", b"1", "non-ASCII name"),
    (b"X-\x7f", b"1", "DEL in a name"),
]


@scenario("headers", "header names/values with CR, LF, NUL and other control bytes")
def s_headers(s: Scenario):
    ok = s.healthy()
    a = hostile(s, "hdr")
    s.up([ok, a], probe=ok)
    for name, value, label in BAD_HEADERS:
        r = fault_then_replaced(s, a, label, f"/header?name={name.hex()}&value={value.hex()}", 502)
        s.expect("set-cookie" not in r.headers and "x-evil" not in r.headers, label,
                 f"the injected header reached the client: {r.headers}")


@scenario("nobody", "204/304/205 (and HEAD) answered with a body")
def s_nobody(s: Scenario):
    ok = s.healthy()
    a = hostile(s, "nobody")
    s.up([ok, a], probe=ok)
    cases = [(204, 100), (204, 100000), (304, 100), (304, 100000), (205, 5000)]
    for code, n in cases:
        label = f"{code} with a {n}-byte body"
        old = s.current_pid(a)
        s.inject(label)
        # On one keep-alive connection: the bodiless answer, then another request, which must be
        # framed right (no body bytes of the first left in the stream).
        s.count_requests(2)
        try:
            with socket.create_connection(("127.0.0.1", a["trigger_port"]), timeout=10) as c:
                c.sendall(f"GET /nobody?code={code}&n={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                c.settimeout(0.4)
                try:
                    while True:
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        rest += chunk
                except socket.timeout:
                    pass
                s.expect(status_of(head) == code, label, f"expected HTTP {code}, got head {head!r}")
                s.expect(rest == b"", label, f"{len(rest)} body bytes followed the head: {rest[:80]!r}")
                lower = head.lower()
                if code == 205:
                    s.expect(b"content-length: 0" in lower, label, f"205 without Content-Length: 0: {head!r}")
                else:
                    s.expect(b"content-length" not in lower and b"transfer-encoding" not in lower, label,
                             f"{code} with a Content-Length or Transfer-Encoding: {head!r}")
                s.expect(b"x-kept: yes" in lower, label, f"the handler's other headers were lost: {head!r}")
                c.settimeout(10)
                c.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
                second = b""
                while b"\r\n\r\n" not in second:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    second += chunk
                s.expect(second.startswith(b"HTTP/1.1 200"), label,
                         f"the next request on the connection was answered {second[:120]!r}")
        except OSError as e:
            s.unexpected_outcome(label, f"connection failed: {e}")
        r = s.get(a["trigger_port"], "/ok")
        s.expect(r.status == 200 and r.pid() == old, label,
                 f"a body on {code} is dropped, not a fault: the instance should still serve ({old}); got {r}")
    # HEAD: the body the handler wrote is not sent, the length is.
    s.inject("HEAD answered with a body")
    r = s.get(a["trigger_port"], "/big?n=1234", method="HEAD")
    s.expect(r.status == 200 and r.body == b"" and r.headers.get("content-length") == "1234", "HEAD with a body",
             f"expected 200, no body, Content-Length 1234: {r} {r.headers}")


@scenario("bigbody", "response body larger than the ring's max payload (1 MiB rings)")
def s_bigbody(s: Scenario):
    ok = s.healthy()
    a = hostile(s, "big", max_body_bytes=100000, memory_limit_mb=600)
    s.up([ok, a], orchestrator={"shm_buffer_size": 1 << 20}, probe=ok)
    max_payload = (1 << 20) // 2 - 8
    fits = max_payload - 24 - 200
    old = s.current_pid(a)
    r = s.get(a["trigger_port"], f"/big?n={fits}")
    s.expect(r.status == 200 and len(r.body) == fits, "a body that fits",
             f"expected 200 with {fits} bytes, got {r.status} with {len(r.body)}")
    for n in (max_payload - 24 + 1, max_payload + 1, 1 << 20, 8 << 20, 64 << 20):
        label = f"a {n}-byte body (max_payload {max_payload})"
        s.inject(label)
        r = s.get(a["trigger_port"], f"/big?n={n}", timeout=30)
        doc = r.json() or {}
        s.expect(r.status == 500 and "max_payload" in str(doc.get("error")), label,
                 f"expected the runtime's 500 naming both sizes, got {r}")
        s.expect(r.headers.get("x-aether-instance") is not None, label, f"not the handler's answer: {r.headers}")
    r = s.get(a["trigger_port"], "/ok")
    s.expect(r.status == 200 and r.pid() == old, "after the oversized bodies",
             f"the same instance ({old}) should still serve: {r}")


#: Valid responses with many or huge headers (4 MiB rings: max_payload 2 MiB - 8).
BIG_HEADERS = [(10000, 10, "10,000 headers"), (1, 1 << 20, "one 1 MiB header value"),
               (400, 4096, "400 headers of 4 KiB")]


@scenario("bigheaders", "valid responses with huge headers (10,000 headers, a 1 MiB value, over max_payload)")
def s_bigheaders(s: Scenario):
    ok = s.healthy()
    a = hostile(s, "bighdr", memory_limit_mb=256)
    s.up([ok, a], probe=ok)
    port = a["trigger_port"]
    old = s.current_pid(a)
    for n, size, label in BIG_HEADERS:
        s.inject(label)
        reply, closed, error = s.raw(port, f"GET /manyheaders?n={n}&size={size} HTTP/1.1\r\nHost: x\r\n"
                                     f"Connection: close\r\n\r\n".encode(), timeout=20)
        head, _, body = reply.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")[1:]
        ours = [line for line in lines if line.lower().startswith(b"x-h")]
        if not s.expect(status_of(reply) == 200 and body == b"many", label,
                        f"expected the handler's 200 with its headers, got {reply[:200]!r} ({len(reply)} bytes, "
                        f"closed={closed}, {error})", a["id"]):
            continue
        s.expect(len(ours) == n and all(len(line.partition(b": ")[2]) == size for line in ours), label,
                 f"expected {n} headers of {size} bytes, got {len(ours)} "
                 f"(lengths {sorted({len(line.partition(b': ')[2]) for line in ours})[:5]})")
    label = "3 headers of 1 MiB (over max_payload)"
    s.inject(label)
    r = s.get(port, f"/manyheaders?n=3&size={1 << 20}", timeout=20)
    s.settle(r)
    s.expect(r.status == 500 and "max_payload" in str((r.json() or {}).get("error")), label,
             f"expected the runtime's 500 naming max_payload, got {r}", a["id"])
    r = s.get(port, "/ok")
    s.expect(r.status == 200 and r.pid() == old, "after the huge headers",
             f"valid answers are not faults: the same instance ({old}) should still serve: {r}", a["id"])


RING1_KINDS = [
    ("random-payload", "a record of random bytes (valid crc32)"),
    ("random-bytes", "random bytes over the next record, head moved past them"),
    ("bad-crc", "a response record with a bad crc32"),
    ("len-over-max", "a record length over max_payload"),
    ("len-past-head", "a record length running past head"),
    ("len-huge", "a record length of 0x7ffffff8"),
    ("wrap-past-head", "a wrap marker with head short of the end"),
    ("truncated", "body_len larger than the message"),
    ("count-mismatch", "header_count larger than the header block"),
    ("wrong-kind", "a response message of kind 1"),
    ("wrong-version", "a response message of version 9"),
    ("short", "a 2-byte response message"),
]


@scenario("ring1", "garbage in the response ring (random bytes, bad crc32, impossible lengths, bad messages)")
def s_ring1(s: Scenario):
    ok = s.healthy()
    a = hostile(s, "ring1")
    s.up([ok, a], probe=ok)
    for kind, label in RING1_KINDS:
        r = fault_then_replaced(s, a, label, f"/ring1?kind={kind}", 502, within=6.0)
        s.expect(b"should never be seen" not in r.body, label, f"a corrupt record reached the client: {r}")


#: Words of the response ring the handler owns (it is the producer): impossible values must fail
#: the instance (502).
RING1_OWN_WORDS = [
    ("head-far", "response ring: head 40 capacities past tail"),
    ("head-near-2^64", "response ring: head = 2^64 - 8"),
    ("misaligned", "response ring: head not a multiple of 8"),
    ("head-behind", "response ring: head behind tail"),
]
#: Words of the response ring the orchestrator owns, written by the handler, which then answers by
#: hand and exits: the answer is 200 (the word is ignored) or 502 (the instance is failed for it).
RING1_THEIR_WORDS = [
    ("tail-ahead", "response ring: tail > head (the orchestrator's word)"),
    ("tail-far-behind", "response ring: tail 40 capacities behind head"),
    ("poisoned", "response ring: the poisoned word set by the producer"),
]
RING0_WORDS = [
    ("tail-ahead", "request ring: tail > head"),
    ("tail-behind", "request ring: head more than the capacity past tail"),
    ("misaligned", "request ring: tail not a multiple of 8"),
    ("poisoned", "request ring: the poisoned word set, tail stuck"),
    ("head-far", "request ring: head 40 capacities past tail (the orchestrator's word)"),
]
#: Words of RING0_WORDS the orchestrator owns: ignoring them is fine too.
RING0_THEIR_WORDS = {"head-far"}


@scenario("words", "hostile ring words in both rings (tail > head, head far past tail, poisoned, futex words)")
def s_words(s: Scenario):
    ok = s.healthy()
    # 64 KiB rings and 16 000-byte request bodies: a few requests fill a request ring, so the
    # orchestrator has to read the tail word the handler wrote.
    a = hostile(s, "words", max_body_bytes=16000, timeout_ms=5000)
    s.up([ok, a], orchestrator={"shm_buffer_size": 65536}, probe=ok)
    for kind, label in RING1_OWN_WORDS:
        fault_then_replaced(s, a, label, f"/words1?kind={kind}", 502, within=6.0)
    for kind, label in RING1_THEIR_WORDS:
        s.guard(their_word, s, a, kind, label)
    s.guard(response_futex_words, s, a)
    for kind, label in RING0_WORDS:
        s.guard(request_ring_word, s, a, kind, label)
    s.guard(request_futex_words, s, a)


def their_word(s: Scenario, a: dict, kind: str, label: str):
    """A response-ring word the orchestrator owns, then an answer by hand: 200 or 502."""
    old = s.current_pid(a)
    s.inject(label)
    r = s.get(a["trigger_port"], f"/words1?kind={kind}")
    s.settle(r)
    if s.expect(r.status in (200, 502), label, f"expected 200 (ignored) or 502, got {r}", a["id"]):
        if r.status == 200:
            s.expect((r.json() or {}).get("words1") == kind, label, f"not the handler's answer: {r}")
        else:
            s.expect_orchestrator_error(r, 502, label, a["id"])
    s.expect_replaced(a, old, label)
    s.check_alive(label)


def response_futex_words(s: Scenario, a: dict):
    """Futex words of the response ring: harmless; the answer still arrives."""
    s.inject("response ring: every futex word random, wake-up storm")
    r = s.get(a["trigger_port"], "/words1?kind=futex")
    s.settle(r)
    s.expect(r.status == 200 and r.elapsed < 3.0, "response ring futex words", f"expected a 200 within 3 s: {r}")
    r = s.get(a["trigger_port"], "/ok")
    s.expect(r.status == 200, "after the futex words", f"{r}")


#: Request bodies that fill a 64 KiB request ring in a few requests.
RING0_BODY = b"b" * 16000


def request_ring_word(s: Scenario, a: dict, kind: str, label: str):
    """The request ring: the handler serves it by hand from then on, writing the word after each
    request. The orchestrator must notice when it reads the tail (at the latest when the ring
    looks full), answer everything (200 or 502), and replace the instance."""
    port = a["trigger_port"]
    old = s.current_pid(a)
    s.inject(label)
    first = s.get(port, f"/words0?kind={kind}")
    s.settle(first)
    if not s.expect(first.status == 200 and (first.json() or {}).get("hijacked") == kind, label,
                    f"the injecting request should be answered by the handler: {first}", a["id"]):
        s.expect_replaced(a, old, label)
        return
    replaced = None
    answers = []
    for i in range(12):
        r = s.get(port, "/ok", method="POST", body=RING0_BODY, timeout=20)
        s.settle(r)
        answers.append(r.status)
        if not s.expect(r.status in (200, 502), label, f"request {i + 1} after the fault: expected 200 "
                        f"(or 502 for a request on the broken ring), got {r}; answers so far {answers}", a["id"]):
            break
        doc = r.json() or {}
        if r.status == 200 and "hijacked" not in doc and r.pid() != old:
            replaced = r.pid()
            break
    if kind in RING0_THEIR_WORDS and replaced is None and set(answers) == {200}:
        # The orchestrator's own word (it is the producer of ring 0): like the response ring's
        # tail, it may be ignored (the orchestrator writes it again) as long as everything is
        # answered; or the instance is failed for it (502, replaced).
        s.run.log(f"words: {label}: ignored, the instance served all {len(answers)} requests")
    else:
        s.expect(replaced is not None, label,
                 f"the instance with the broken request ring was not replaced within 12 requests of 16 KB "
                 f"(answers {answers})", a["id"])
    if replaced is None and old:  # get rid of it for the next injection
        host = s.kill_instance(a, old)
        s.wait_serving(a["id"], exclude=(host,))
    s.check_alive(label)


def request_futex_words(s: Scenario, a: dict):
    """Futex words of the request ring: harmless while tail stays right."""
    port = a["trigger_port"]
    old = s.current_pid(a)
    s.inject("request ring: every futex word random after each request")
    first = s.get(port, "/words0?kind=futex")
    s.settle(first)
    s.expect(first.status == 200, "request ring futex words", f"{first}")
    statuses = []
    for _ in range(10):
        r = s.get(port, "/ok", method="POST", body=RING0_BODY, timeout=20)
        s.settle(r)
        statuses.append((r.status, round(r.elapsed, 2)))
    s.expect(all(st == 200 and el < 3.0 for st, el in statuses), "request ring futex words",
             f"expected ten 200s within 3 s each, got {statuses}")
    if old:
        host = s.kill_instance(a, old)
        s.wait_serving(a["id"], exclude=(host,))


CONTROL_PER_REQUEST = [
    ("/line", "an unknown line while serving"),
    ("/attached", "ATTACHED again while serving"),
    ("/ready", "READY again while serving"),
    ("/long", "a 10 KB line while serving"),
    ("/unterminated", "10 KB without a newline while serving"),
    ("/binary", "binary bytes while serving"),
]
CONTROL_AT_START = [
    ("line-before-ready", "a line before READY", {503}),
    ("long-before-ready", "a 10 KB line before READY", {503}),
    ("binary-before-ready", "binary garbage before READY", {503}),
    ("close-before-ready", "the control socket closed before READY", {503}),
    ("silent", "nothing said (startup_timeout_ms)", {503}),
    ("ready-twice", "READY twice", {503}),
    ("line-before-attached", "a line between ATTACH and ATTACHED", {503}),
    ("error-instead-of-attached", "ERROR instead of ATTACHED", {503}),
    # The instance serves between the two lines: a request it answered first may get its 200.
    ("attached-twice", "ATTACHED twice", {200, 502, 503}),
    ("garbage-after-attached", "a line right after ATTACHED", {200, 502, 503}),
]


@scenario("control", "control-connection garbage (lines before/after READY, 10 KB lines, ATTACHED twice, close)")
def s_control(s: Scenario):
    ok = s.healthy()
    mode = os.path.join(s.tmp, "rogue.mode")
    with open(mode, "w") as f:
        f.write("good")
    s.write("rogue", handlers.control_rogue(PYTHON, SDK_DIR), executable=True)
    a = s.fn("rogue", "rogue", max_instances=1, startup_timeout_ms=1500, timeout_ms=15000,
             environment={"FAULT_MODE_FILE": mode})
    s.up([ok, a], probe=ok)
    port = a["trigger_port"]
    for path, label in CONTROL_PER_REQUEST:
        fault_then_replaced(s, a, label, path, 502, within=4.0)
    # Closing the control connection while serving: not a protocol error by itself.
    old = s.current_pid(a)
    s.inject("the control socket closed while serving")
    r = s.get(port, "/close")
    s.expect(r.status == 200, "control socket closed", f"{r}")
    for _ in range(3):
        r = s.get(port, "/ok")
        s.expect(r.status == 200, "after the control socket closed", f"expected 200 (same or new instance): {r}")
    who = r.pid() if r.status == 200 else None
    if who:  # start the next ones from a fresh instance
        host = s.kill_instance(a, who)
        s.wait_serving(a["id"], exclude=(host,))
    rounds = CONTROL_AT_START if not s.run.quick else CONTROL_AT_START[::2]
    for bad, label, statuses in rounds:
        old = s.current_pid(a)
        with open(mode, "w") as f:
            f.write(bad)
        s.inject(f"replacement instance: {label}")
        if old:
            host = s.kill_instance(a, old)
            # The request must not race the crash (it would get the crashed instance's 502).
            wait_until(lambda: host not in s.serving_pids(a["id"]), 10.0, 0.05)
        r = s.get(port, "/ok", timeout=30)
        broke = s.host_pid(a, r.pid()) if r.status == 200 else None
        s.expect_orchestrator_error(r, statuses, f"while no instance can start ({label})", a["id"], retry_after=True)
        if broke:
            s.expect(wait_until(lambda: not alive(broke), 5.0), label,
                     f"the instance that broke the protocol ({broke}) is still running")
        with open(mode, "w") as f:
            f.write("good")
        s.expect_replaced(a, old, f"recovery after {label}", timeout=25)
        s.check_alive(label)
    # The same handler in a deploy: the deploy fails, naming the function; nothing changes.
    with open(mode, "w") as f:
        f.write("line-before-ready")
    b = s.fn("rogue2", "rogue", max_instances=1, startup_timeout_ms=1500, environment={"FAULT_MODE_FILE": mode})
    s.inject("deploy of a function that talks before READY")
    d = s.aether("deploy", s.config([b], name="deploy.yaml"))
    s.expect(d.returncode == 1 and b["id"] in d.stderr, "deploy with a protocol violation",
             f"expected exit 1 naming {b['id']}: exit {d.returncode}, {d.stderr.strip()[:400]}")
    listed = s.aether("list", "--json")
    s.expect(b["id"] not in listed.stdout, "deploy with a protocol violation", "the function was deployed anyway")
    with open(mode, "w") as f:
        f.write("good")


CRASH_MODES = [
    ("exit", "exits at import (os._exit(3))"),
    ("segv", "SIGSEGV at import"),
    ("raise", "raises at import"),
    ("exit0", "exits 0 before READY"),
    ("hang", "never says READY (startup_timeout_ms 1500)"),
]


@scenario("startloop", "startup crash loop: every new instance exits, crashes, raises or hangs before READY")
def s_startloop(s: Scenario):
    ok = s.healthy()
    mode = os.path.join(s.tmp, "loop.mode")
    with open(mode, "w") as f:
        f.write("good")
    s.write("crashloop.py", handlers.CRASHLOOP)
    a = s.fn("loop", "crashloop.py", max_instances=1, startup_timeout_ms=1500, environment={"FAULT_MODE_FILE": mode})
    s.up([ok, a], probe=ok)
    modes = CRASH_MODES if not s.run.quick else CRASH_MODES[::2]
    for bad, label in modes:
        s.guard(crash_loop, s, a, mode, bad, label)


def starts_logged(s: Scenario, function_id: str) -> int:
    return sum(1 for line in s.orch.stderr().splitlines()
               if f"function={function_id} " in line and "instance started" in line)


def crash_loop(s: Scenario, a: dict, mode: str, bad: str, label: str):
    """README: while no instance can start, requests get 503 with Retry-After; a failing instance
    is replaced with back-off 0.1 s .. 10 s (no tight restart loop); it serves again once it can."""
    port = a["trigger_port"]
    old = s.current_pid(a, "/")
    with open(mode, "w") as f:
        f.write(bad)
    s.inject(f"every new instance {label}")
    if old:
        host = s.kill_instance(a, old)
        wait_until(lambda: host not in s.serving_pids(a["id"]), 10.0, 0.05)
    starts = starts_logged(s, a["id"])
    began = time.monotonic()
    answers = []
    while time.monotonic() - began < 4.0:
        r = s.get(port, "/", timeout=30)
        answers.append(r.status)
        if not s.expect_orchestrator_error(r, 503, f"while every start fails ({label})", a["id"], retry_after=True):
            break
        time.sleep(0.2)
    window = time.monotonic() - began
    tries = starts_logged(s, a["id"]) - starts
    s.run.log(f"startloop: {label}: {tries} starts in {window:.1f} s, answers {answers}")
    # Back-off 0.1, 0.2, 0.4, 0.8, 1.6, 3.2 s ... : a handful of starts, not a tight loop.
    s.expect(tries <= 12, label, f"{tries} instance starts in {window:.1f} s: no back-off", a["id"])
    with open(mode, "w") as f:
        f.write("good")
    s.expect_replaced(a, old, f"recovery after {label}", path="/", timeout=30)
    s.check_alive(label)


@scenario("pstart", "process handler: READY and never listens, listens elsewhere, exits (startup timeout)")
def s_pstart(s: Scenario):
    ok = s.healthy()
    mode = os.path.join(s.tmp, "proc.mode")
    with open(mode, "w") as f:
        f.write("good")
    s.write("proc.py", handlers.PROCESS)
    a = s.fn("proc", "proc.py", protocol="process", startup_timeout_ms=1500, environment={"FAULT_MODE_FILE": mode})
    s.up([ok, a], probe=ok)
    # Deploys of process handlers that never serve: refused with a clear error, nothing applied.
    for bad, label, needle in (("never-listen", "READY, never listens", "listen"),
                               ("wrong-port", "listens on another port", "listen"),
                               ("ready-then-exit", "READY, then exits", "")):
        bad_mode = os.path.join(s.tmp, f"{bad}.mode")
        with open(bad_mode, "w") as f:
            f.write(bad)
        b = s.fn(bad[:12], "proc.py", protocol="process", startup_timeout_ms=1000,
                 environment={"FAULT_MODE_FILE": bad_mode})
        s.inject(f"deploy: {label}")
        d = s.aether("deploy", s.config([b], name=f"{bad}.yaml"))
        s.expect(d.returncode == 1 and b["id"] in d.stderr and needle in d.stderr, f"deploy: {label}",
                 f"expected exit 1 naming {b['id']}{' and saying ' + needle if needle else ''}: exit {d.returncode}, "
                 f"{d.stderr.strip()[:500]}")
        s.expect(b["id"] not in s.aether("list", "--json").stdout, f"deploy: {label}", "deployed anyway")
        s.check_alive(label)
    # A replacement instance that never listens: the port is held (connections wait, none is
    # refused or answered by anything else), and the function serves again once it can.
    for _ in range(max(1, s.rounds - 1)):
        old = s.current_pid(a, "/")
        with open(mode, "w") as f:
            f.write("never-listen")
        s.inject("replacement instance: READY, never listens")
        if old:
            host = s.kill_instance(a, old)
            wait_until(lambda: host not in s.serving_pids(a["id"]), 10.0, 0.05)
        time.sleep(0.3)
        held_before = port_entry(s, a["trigger_port"]).get("held", 0)
        s.count_requests(1)
        began = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", a["trigger_port"]), timeout=2) as c:
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                c.settimeout(2)
                got = c.recv(100)
                s.expect(False, "while no instance listens", f"a connection was accepted and answered {got!r}")
        except socket.timeout:
            pass  # held: the SYN is dropped until an instance listens
        except OSError as e:
            held_after = port_entry(s, a["trigger_port"]).get("held", 0)
            s.unexpected_outcome(
                "while no instance listens",
                f"docs/handler-protocol.md: \"the trigger port is held: SYNs are dropped and the client sends them "
                f"again\"; the connection failed after {time.monotonic() - began:.3f} s with {e} while the port's "
                f"`held` counter went {held_before} -> {held_after} (sk_lookup's SK_DROP answers the SYN with a RST)",
                a["id"])
        with open(mode, "w") as f:
            f.write("good")
        s.expect_replaced(a, old, "recovery of the process handler", path="/", timeout=30)
    # `aether up` with such a function: fails fast, says why, leaves nothing.
    other = os.path.join(s.tmp, "other")
    os.makedirs(other)
    never_mode = os.path.join(s.tmp, "never-listen.mode")
    c = s.fn("upnever", os.path.join(s.tmp, "proc.py"), protocol="process", startup_timeout_ms=1000,
             environment={"FAULT_MODE_FILE": never_mode})
    cfg = s.write("other/up.yaml", render_config([c], {"control_socket": os.path.join(other, "ctl.sock"),
                                                        "state_dir": os.path.join(other, "state")}))
    s.inject("aether up: READY, never listens")
    began = time.monotonic()
    orch = Orch(s, ["-c", cfg])
    status = orch.wait_exit(20)
    orch.expected_exit = True
    err = orch.stderr()
    orch.close()
    s.expect(status == 1 and c["id"] in err and "listen" in err, "aether up: never listens",
             f"expected exit 1 within 20 s naming {c['id']} and 'listen': {status}, {err.strip()[-500:]}")
    s.expect(time.monotonic() - began < 10, "aether up: never listens", "took over 10 s")


def sockets_on(ports) -> list[str]:
    """`ss -tanp` lines of TCP sockets whose local port is one of `ports`."""
    out = subprocess.run(["ss", "-Htanp"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].rsplit(":", 1)[-1].isdigit() and int(fields[3].rsplit(":", 1)[-1]) in ports:
            found.append(" ".join(fields))
    return found


def port_entry(s: Scenario, port: int) -> dict:
    listed = s.aether("stats", "--json", timeout=20)
    try:
        ports = json.loads(listed.stdout).get("ebpf", {}).get("ports", [])
    except ValueError:
        return {}
    return next((p for p in ports if p.get("port") == port), {})


@scenario("ptimeout", "process handler never answers a request (timeout_ms)")
def s_ptimeout(s: Scenario):
    ok = s.healthy()
    mode = os.path.join(s.tmp, "proc.mode")
    with open(mode, "w") as f:
        f.write("good")
    s.write("proc.py", handlers.PROCESS)
    a = s.fn("ptime", "proc.py", protocol="process", timeout_ms=800, environment={"FAULT_MODE_FILE": mode})
    s.up([ok, a], probe=ok)
    for _ in range(s.rounds):
        for path, label in (("/slow", "sleeps 60 s in its request"), ("/deadlock", "deadlocks in its request")):
            old = s.current_pid(a, "/")
            s.inject(label)
            r = s.get(a["trigger_port"], path, timeout=20)
            if s.expect_orchestrator_error(r, 504, label, a["id"]):
                s.expect(r.elapsed < 4.0, label, f"the 504 came after {r.elapsed:.2f} s (timeout_ms 800)")
                s.expect("timeout_ms 800" in (r.error_text() or ""), label, f"the 504 does not name timeout_ms: {r}")
            s.expect_replaced(a, old, label, path="/", timeout=20)


@scenario("snapshot", "snapshot image corrupted under snapshot_dir (pages deleted, overwritten, truncated)")
def s_snapshot(s: Scenario):
    ok = s.healthy()
    s.write("snap.py", handlers.SNAPSHOT)
    a = s.fn("snap", "snap.py", snapshot=True, min_warm=0, max_instances=2, idle_timeout_ms=300)
    # No warm pool: copies restored ahead of demand would come from the image before it is
    # damaged; these restores must read the damaged one.
    s.up([ok, a], orchestrator={"warm_pool_size": 0}, probe=ok)
    port = a["trigger_port"]
    kinds = [("delete", "pages-*.img deleted"), ("garbage", "pages-*.img overwritten with random bytes"),
             ("delete", "pages-*.img deleted again"), ("truncate", "pages-*.img truncated to 4 KiB")]
    if s.run.quick:
        kinds = kinds[:1]
    for kind, label in kinds:
        r = s.get(port, "/")
        for _ in range(5):  # README: a restore over restore_timeout_ms is a 503 (a loaded host), not a fault
            if r.status == 503 and "restore budget" in (r.error_text() or ""):
                time.sleep(0.2)
                r = s.get(port, "/")
        s.expect(r.status == 200, f"before: {label}", f"{r}")
        if not wait_until(lambda: s.instances(a["id"]) == [], 10.0, 0.2):
            s.unexpected_outcome(label, f"the idle instance did not stop: {s.instances(a['id'])}")
            continue
        image = s.stats(a["id"]).get("snapshot", {}).get("image")
        if not image or not os.path.isdir(image):
            s.unexpected_outcome(label, f"no image folder in aether stats: {image}")
            continue
        pages = [os.path.join(image, n) for n in os.listdir(image) if n.startswith("pages-")]
        s.inject(label)
        for path in pages:
            if kind == "delete":
                os.unlink(path)
            elif kind == "garbage":
                size = os.path.getsize(path)
                with open(path, "r+b") as f:
                    f.write(os.urandom(size))
            else:
                os.truncate(path, 4096)
        failures = []
        answer = None
        patience = 40
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            r = s.get(port, "/", timeout=30)
            if r.status == 200:
                answer = r
                break
            failures.append(r)
            time.sleep(0.1)
        bad = [f for f in failures if f.status != 503 or "retry-after" not in f.headers or f.error_text() is None]
        s.expect(not bad, label, f"expected 503 with Retry-After and a JSON error until it is rebuilt: "
                 f"{[str(f) for f in bad[:3]]}", a["id"])
        for f in failures:
            leaked = [d for d in ("/dev/shm", s.tmp, ".img", "criu") if d in f.body.decode("utf-8", "replace")]
            if leaked:
                s.unexpected_outcome(label, f"a 503 shows the host's internals {leaked}: {f}")
                break
        slow = [f for f in failures if f.elapsed > 2]
        if s.expect(answer is not None, label, f"not served again within {patience} s ({len(failures)} answers, "
                    f"{len(slow)} of them after more than 2 s); the last: {[str(f) for f in failures[-2:]]}",
                    "restore"):
            s.expect(answer.headers.get("x-aether-cold-start") == "restore", label,
                     f"served again, but not by a restore of a rebuilt image: {answer.headers}")
            after = s.stats(a["id"]).get("snapshot", {}).get("image")
            s.expect(after != image, label, f"the image folder is still {image}: not rebuilt")
        s.check_alive(label)
    s.expect("snapshot rebuilt" in s.orch.stderr(), "snapshot rebuild", "the log never says \"snapshot rebuilt\"")


@scenario("criu", "criu missing (criu_path /bin/false, a path that does not exist)")
def s_criu(s: Scenario):
    s.write("snap.py", handlers.SNAPSHOT)
    for path in ("/bin/false", "/nonexistent/criu"):
        a = s.fn("nocriu", "snap.py", snapshot=True, min_warm=0)
        cfg = s.config([a], name="nocriu.yaml", orchestrator={"criu_path": path})
        s.inject(f"aether up with criu_path {path}")
        began = time.monotonic()
        orch = Orch(s, ["-c", cfg])
        s.orchs.append(orch)
        status = orch.wait_exit(30)
        orch.expected_exit = True
        err = orch.stderr()
        failure = "\n".join(line for line in err.splitlines() if line.startswith("aether up:"))
        s.expect(status == 1 and failure, f"up with criu_path {path}",
                 f"expected exit 1 with an `aether up:` error; exit {status}: {err.strip()[-600:]}")
        s.expect(path in failure and "criu" in failure, f"up with criu_path {path}",
                 f"the error does not name the criu_path it tried ({path}): {failure!r}", "criu")
        s.expect(time.monotonic() - began < 15, f"up with criu_path {path}", "took over 15 s")
        s.expect(not os.path.exists(s.control_socket), f"up with criu_path {path}", "the control socket was left")
        s.expect(wait_until(lambda: not process_lines_mentioning(s.tmp), 5.0), f"up with criu_path {path}",
                 f"processes left: {process_lines_mentioning(s.tmp)}")
    # A running orchestrator without criu: deploying a snapshot function fails, the rest serves.
    ok = s.healthy()
    s.up([ok], orchestrator={"criu_path": "/bin/false"}, probe=ok)
    before = open(os.path.join(s.state_dir, "desired.yaml")).read()
    for _ in range(s.rounds):
        b = s.fn("dsnap", "snap.py", snapshot=True, min_warm=0)
        s.inject("deploy of a snapshot function with criu_path /bin/false")
        d = s.aether("deploy", s.config([b], name="deploy.yaml", orchestrator={"criu_path": "/bin/false"}))
        s.expect(d.returncode == 1 and "criu" in d.stderr, "deploy without criu",
                 f"expected exit 1 saying criu is the problem: exit {d.returncode}, {d.stderr.strip()[:500]}")
        s.expect(b["id"] in d.stderr and "/bin/false" in d.stderr, "deploy without criu",
                 f"README: a failed deploy's error \"names the function and says nothing was applied\"; this one names "
                 f"neither the function {b['id']} nor the criu_path /bin/false: {d.stderr.strip()[:500]!r}")
        s.expect(b["id"] not in s.aether("list", "--json").stdout, "deploy without criu", "deployed anyway")
    after = open(os.path.join(s.state_dir, "desired.yaml")).read()
    s.expect(after == before, "deploy without criu", "the stored state changed after failed deploys")


@scenario("kill9", "kill -9 of the orchestrator, then `aether up` with no file (durable state)")
def s_kill9(s: Scenario):
    ok = s.healthy()
    s.write("snap.py", handlers.SNAPSHOT)
    s.write("proc.py", handlers.PROCESS)
    mode = os.path.join(s.tmp, "proc.mode")
    with open(mode, "w") as f:
        f.write("good")
    h = hostile(s, "k9sdk")
    p = s.fn("k9proc", "proc.py", protocol="process", environment={"FAULT_MODE_FILE": mode})
    n = s.fn("k9snap", "snap.py", snapshot=True, min_warm=0)
    s.up([ok, h, p, n], probe=ok)
    s.descriptor_check = False  # functions are added by deploy and the orchestrator restarted
    extra = hostile(s, "k9dep")
    d = s.aether("deploy", s.config([extra], name="more.yaml"))
    s.expect(d.returncode == 0, "deploy before the kill", f"{d.returncode} {d.stderr.strip()}")
    functions = [(ok, "/"), (h, "/ok"), (p, "/"), (n, "/"), (extra, "/ok")]
    for i in range(max(1, s.rounds - 1)):
        orch = s.orch
        pids = [inst["pid"] for f in json.loads(s.aether("list", "--json").stdout).get("functions", [])
                for inst in f.get("instances", [])]
        s.prober.pause()
        s.inject("kill -9 of aether up")
        orch.kill9()
        # Nothing documented says handlers die with their orchestrator (an sdk runtime exits when
        # its control connection ends; a process handler need not watch it): the next `aether up`
        # must end them (checked below).
        time.sleep(0.5)
        survivors = [pid for pid in pids if pid > 1 and alive(pid)]
        s.run.log(f"kill9: {len(survivors)} of {len(pids)} handlers outlived the orchestrator by 0.5 s")
        ports = {fn["trigger_port"] for fn, _ in functions}
        sockets_before = sockets_on(ports)
        try:
            new = s.up_args(["--state-dir", s.state_dir], probe=ok)
        except ScenarioError as e:
            s.orch.expected_exit = True
            raise ScenarioError(f"{e}\nsockets on the trigger ports before this `aether up` (ss -tanp):\n    "
                                + "\n    ".join(sockets_before)) from None
        s.expect(wait_until(lambda: not any(alive(pid) for pid in pids if pid > 1), 5.0, 0.1), "resume",
                 f"handlers of the killed orchestrator still run after `aether up`: "
                 f"{[pid for pid in pids if pid > 1 and alive(pid)]}")
        sockets = glob.glob(os.path.join(s.tmp, f"*-{orch.pid}.sock"))
        s.expect(not sockets, "resume", f"the killed orchestrator's handler sockets are left beside the control "
                 f"socket (the next `up` does not remove them): {[os.path.basename(x) for x in sockets]}")
        s.expect("resuming the deployed state: 5 functions" in new.stderr(), "resume",
                 f"expected to resume 5 functions: {new.stderr()[-600:]}")
        for fn, path in functions:
            r = s.get(fn["trigger_port"], path)
            for _ in range(4):  # README: a restore over restore_timeout_ms is a 503, never a slow answer
                if r.status == 503 and "restore budget" in (r.error_text() or ""):
                    r = s.get(fn["trigger_port"], path)
            s.expect(r.status == 200, f"{fn['id']} after resume", f"{r}", fn["id"])
        stale = [r for f in s.fids for r in shm_regions(f) if f"-p{orch.pid}-" in r]
        s.expect(not stale, "resume", f"the killed orchestrator's shared memory is still there: {stale}")


@scenario("disk", "full disk: snapshot_dir and state_dir on a small tmpfs, filled up")
def s_disk(s: Scenario):
    disk = os.path.join(s.tmp, "disk")
    os.makedirs(disk)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m,mode=0700", "tmpfs", disk], capture_output=True,
                           text=True)
    if mount.returncode != 0:
        raise ScenarioError(f"cannot mount a tmpfs at {disk}: {mount.stderr.strip()}")
    try:
        _disk(s, disk)
    finally:
        s.finish()
        subprocess.run(["umount", "-l", disk], capture_output=True)


def _disk(s: Scenario, disk: str):
    s.descriptor_check = False  # a function is added by deploy at the end
    s.state_dir = os.path.join(disk, "state")
    s.snapshot_dir = os.path.join(disk, "images")
    ok = s.healthy()
    s.write("snap.py", handlers.SNAPSHOT)
    h = hostile(s, "dskok")
    n = s.fn("dsnap", "snap.py", snapshot=True, min_warm=1, max_instances=1)
    s.up([ok, h, n], probe=ok)
    token = (s.get(n["trigger_port"], "/").json() or {}).get("token")
    state_file = os.path.join(s.state_dir, "desired.yaml")
    before = open(state_file).read()
    st = os.statvfs(disk)
    s.run.log(f"disk: {(st.f_blocks - st.f_bfree) * st.f_frsize} bytes used before filling")
    fill = os.path.join(disk, "fill")
    fd = os.open(fill, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 64):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    st = os.statvfs(disk)
    s.run.log(f"disk: {st.f_bavail * st.f_frsize} bytes free after filling")
    for i in range(max(1, s.rounds - 1)):
        plain = hostile(s, f"dplain{i}")
        s.inject("deploy of an sdk function on a full disk")
        d = s.aether("deploy", s.config([plain], name="plain.yaml"))
        s.expect(d.returncode == 1 and "space" in d.stderr.lower(), "deploy on a full disk",
                 f"expected exit 1 saying the disk is full: exit {d.returncode}, {d.stderr.strip()[:500]}")
        s.expect(plain["id"] not in s.aether("list", "--json").stdout, "deploy on a full disk", "deployed anyway")
        snap = s.fn(f"dsnew{i}", "snap.py", snapshot=True, min_warm=0)
        s.inject("deploy of a snapshot function on a full disk")
        d = s.aether("deploy", s.config([snap], name="snap.yaml"))
        s.expect(d.returncode == 1 and snap["id"] in d.stderr, "snapshot deploy on a full disk",
                 f"expected exit 1 naming {snap['id']}: exit {d.returncode}, {d.stderr.strip()[:500]}")
        s.expect("space" in d.stderr.lower(), "snapshot deploy on a full disk",
                 f"the error does not say the disk is full (No space left on device): {d.stderr.strip()[:500]!r}")
        s.inject("deploy --force of the running snapshot function on a full disk")
        d = s.aether("deploy", "--force", s.config([n], name="again.yaml"))
        s.expect(d.returncode == 1 and n["id"] in d.stderr, "redeploy on a full disk",
                 f"expected exit 1 naming {n['id']}: exit {d.returncode}, {d.stderr.strip()[:500]}")
        s.expect("space" in d.stderr.lower(), "redeploy on a full disk",
                 f"the error does not say the disk is full (No space left on device): {d.stderr.strip()[:500]!r}")
        s.inject("aether rm on a full disk")
        d = s.aether("rm", h["id"])
        s.expect(d.returncode == 1 and "space" in d.stderr.lower(), "rm on a full disk",
                 f"expected exit 1 saying the disk is full: exit {d.returncode}, {d.stderr.strip()[:500]}")
        for fn, path in ((h, "/ok"), (n, "/")):
            r = s.get(fn["trigger_port"], path)
            s.expect(r.status == 200, f"{fn['id']} on a full disk", f"a running function stopped serving: {r}")
        r = s.get(n["trigger_port"], "/")
        s.expect((r.json() or {}).get("token") == token, "redeploy on a full disk",
                 f"the snapshot function is not the version that ran before: {r}")
        s.check_alive("the full disk")
    s.expect(open(state_file).read() == before, "the stored state", "desired.yaml changed though nothing was applied")
    image = s.stats(n["id"]).get("snapshot", {}).get("image")
    partial = [name for name in os.listdir(s.snapshot_dir) if os.path.join(s.snapshot_dir, name) != image]
    s.expect(not partial, "snapshot_dir", f"failed snapshot builds left folders on the full disk: {partial}")
    leftovers = [name for name in os.listdir(s.state_dir)
                 if name not in ("desired.yaml", "identities", "secrets", "images", "versions")]
    # Versions (versions/<function>/<N>.yaml, code/<digest>/) are written through temporary
    # files and folders, removed when the disk is full, and a code copy no version uses is
    # removed with them: none may be left.
    versions = os.path.join(s.state_dir, "versions")
    for function in os.listdir(versions) if os.path.isdir(versions) else []:
        folder = os.path.join(versions, function)
        numbers = [name for name in os.listdir(folder) if name.endswith(".yaml")]
        leftovers += [f"versions/{function}/{name}" for name in os.listdir(folder) if ".tmp" in name]
        code = os.path.join(folder, "code")
        used = set()
        for name in numbers:
            with open(os.path.join(folder, name)) as f:
                used.update(part.split("/")[0] for part in f.read().split("/code/")[1:])
        leftovers += [f"versions/{function}/code/{name}" for name in os.listdir(code) if name not in used]
    # Kept images (images/<function>/<key>) are written through a temporary folder, removed when
    # the disk is full: none may be left.
    images = os.path.join(s.state_dir, "images")
    for function in os.listdir(images) if os.path.isdir(images) else []:
        leftovers += [f"images/{function}/{name}" for name in os.listdir(os.path.join(images, function))
                      if name.startswith(".")]
    s.expect(not leftovers, "the stored state", f"files left in state_dir after the failed writes: {leftovers}")
    v = subprocess.run([s.run.binary, "validate", state_file], capture_output=True, text=True, env=s.run.env)
    s.expect(v.returncode == 0, "the stored state", f"aether validate of desired.yaml: {v.stdout} {v.stderr}")
    # Space again: the same deploy goes through.
    os.unlink(fill)
    plain = hostile(s, "dafter")
    d = s.aether("deploy", s.config([plain], name="after.yaml"))
    s.expect(d.returncode == 0, "deploy once there is space again", f"exit {d.returncode}: {d.stderr.strip()[:500]}")
    r = s.get(plain["trigger_port"], "/ok")
    s.expect(r.status == 200, "deploy once there is space again", f"{r}")


CLIENT_FAULTS = [
    (b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000, 413, "body over max_body_bytes"),
    (b"POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % 1500 + b"z" * 1500
     + b"\r\n0\r\n\r\n", 413, "chunked body over max_body_bytes"),
    (b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413, "Content-Length of 100 GB"),
    (b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431, "a 20 KB header"),
    (b"GET /ok HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 30) for i in range(600)) + b"\r\n",
     431, "600 headers"),
    (b"GET /" + b"p" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431, "a 20 KB target"),
    (b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n", 431,
     "a 200 KB header (over the HTTP parser's own 80 KiB limit)"),
    (b"GET /ok HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(12000)) + b"\r\n", 431,
     "12,000 headers (over the HTTP parser's own 80 KiB limit)"),
    (b"GARBAGE\r\n\r\n", 400, "a request line that is not HTTP"),
    (bytes(range(256)) + b"\r\n\r\n", 400, "binary garbage"),
    (b"GET /ok HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", 400, "a header line without a colon"),
    (b"GET /ok HTTP/1.1\r\nHost: x\r\nX Bad: 1\r\n\r\n", 400, "a space in a header name"),
    (b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n", 400, "NUL in a header value"),
    (b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400,
     "two different Content-Lengths"),
    (b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "a negative Content-Length"),
    (b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
     400, "Content-Length and Transfer-Encoding"),
    (b"POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n", 400,
     "a chunk size that is not hex"),
]


@scenario("client", "bad client input (413, 431, 400, 408, slow and vanishing clients)")
def s_client(s: Scenario):
    ok = s.healthy()
    a = hostile(s, "client", max_body_bytes=1000, max_instances=2)
    s.up([ok, a], orchestrator={"client_timeout_ms": 800}, probe=ok)
    port = a["trigger_port"]
    for _ in range(max(1, s.rounds - 1)):
        for data, status, label in CLIENT_FAULTS:
            s.inject(label)
            reply, closed, error = s.raw(port, data, timeout=5)
            got = status_of(reply)
            s.expect(got == status, label, f"expected HTTP {status}, got {reply[:200]!r} (error {error})")
            if got == status:
                body = reply.partition(b"\r\n\r\n")[2]
                try:
                    s.expect(isinstance(json.loads(body).get("error"), str), label, f"not a JSON error: {body[:200]!r}")
                except ValueError:
                    s.unexpected_outcome(label, f"not a JSON error: {body[:200]!r}")
                s.expect(closed, label, "the connection was not closed after the error")
        s.inject("a head that never ends (client_timeout_ms 800)")
        reply, closed, error = s.raw(port, b"GET /ok HTTP/1.1\r\nHost: x\r\n", timeout=5)
        s.expect(closed and reply == b"", "slow head", f"expected the connection closed with no answer: {reply!r} "
                 f"closed={closed} {error}")
        s.inject("a body shorter than its Content-Length")
        reply, closed, error = s.raw(port, b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", timeout=5)
        s.expect(status_of(reply) == 408 and closed, "short body", f"expected 408 and a close: {reply[:200]!r}")
        s.inject("the client goes away while the handler works")
        s.count_requests(1)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"GET /sleep?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.8)
        s.inject("the client resets the connection mid-body")
        s.count_requests(1)
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n" + b"y" * 100)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
        r = s.get(port, "/ok")
        s.expect(r.status == 200, "after the bad clients", f"{r}")


# --------------------------------------------------------------------------- main


def reexec_in_namespaces():
    if os.environ.get(NAMESPACE_MARK) == "1":
        return
    if os.geteuid() != 0:
        sys.exit("tests/faults/run.py: needs root (aether up, unshare, mount)")
    env = dict(os.environ)
    env[NAMESPACE_MARK] = "1"
    cmd = ["unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c",
           'ip link set lo up && exec "$@"', "sh", sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
    os.execvpe("unshare", cmd, env)


def main() -> int:
    parser = argparse.ArgumentParser(description="Fault injection against the real aether binary.")
    parser.add_argument("--quick", action="store_true", help="one round of each fault (for scripts/test.sh)")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every injection")
    args = parser.parse_args()
    if args.list:
        for key, title, _, _ in SCENARIOS:
            print(f"{key:10} {title}")
        return 0
    reexec_in_namespaces()
    if not os.access(AETHER_BIN, os.X_OK):
        print(f"faults: no aether binary at {AETHER_BIN} (swift build, or set AETHER_BIN)", file=sys.stderr)
        return 2
    chosen = SCENARIOS
    if args.only:
        wanted = args.only.split(",")
        unknown = [w for w in wanted if w not in {k for k, *_ in SCENARIOS}]
        if unknown:
            print(f"faults: unknown scenario(s) {unknown}; --list shows them", file=sys.stderr)
            return 2
        chosen = [sc for sc in SCENARIOS if sc[0] in wanted]
    run = Run(args)
    began = time.monotonic()
    done: list[Scenario] = []
    print(f"faults: {AETHER_BIN} (copied to {run.binary}), {'quick' if run.quick else 'full'} run, "
          f"{len(chosen)} scenarios", flush=True)
    try:
        for key, title, fn, _ in chosen:
            s = Scenario(run, key, title)
            try:
                fn(s)
            except OrchestratorDied:
                pass  # reported by check_alive
            except ScenarioError as e:
                s.unexpected_outcome("scenario setup", str(e))
            except Exception:  # noqa: BLE001 - a bug in the suite is reported, the run goes on
                s.unexpected_outcome("the fault suite itself", traceback.format_exc())
            if key != "disk":  # finishes itself (before it unmounts)
                try:
                    s.finish()
                except Exception:  # noqa: BLE001
                    s.unexpected_outcome("the leak checks", traceback.format_exc())
            done.append(s)
            print(f"  {key:9} {s.injected:4} injected {s.requests:6} requests {len(s.unexpected):3} unexpected "
                  f"{s.elapsed:6.1f} s", flush=True)
    finally:
        report(done, time.monotonic() - began)
        keep = run.keep or any(s.unexpected for s in done)
        if keep:
            print(f"faults: kept {run.root}")
        else:
            run.cleanup()
    return 1 if any(s.unexpected for s in done) else 0


def report(done: list[Scenario], elapsed: float):
    width = max([len("fault")] + [len(s.title) for s in done])
    print()
    print(f"{'fault':<{width}}  {'faults injected':>15}  {'requests sent':>13}  {'unexpected outcomes':>19}")
    print("-" * (width + 53))
    for s in done:
        print(f"{s.title:<{width}}  {s.injected:>15}  {s.requests:>13}  {len(s.unexpected):>19}")
    print("-" * (width + 53))
    injected = sum(s.injected for s in done)
    requests = sum(s.requests for s in done)
    unexpected = sum(len(s.unexpected) for s in done)
    print(f"faults injected {injected} / requests sent {requests} / unexpected outcomes {unexpected}")
    print(f"({len(done)} scenarios in {elapsed:.0f} s; requests include the background prober's)")
    for s in done:
        for what, detail, tail in s.unexpected:
            print(f"\nUNEXPECTED [{s.key}] {what}: {detail}")
            if tail:
                print("  orchestrator log:\n    " + tail.replace("\n", "\n    "))


if __name__ == "__main__":
    sys.exit(main())
