"""Time to first response of the example functions: (a) cold start of a new process,
(b) restore from the CRIU snapshot, (d) fork from the live template (`snapshot: fork`), (c) an
instance already running. One run, one machine, with confinement on (the default) and off side
by side, samples alternated, and the ratios. Then memory: PSS and USS of 10 live instances of
each example per start mode (forked copies share the template's pages copy-on-write).

Run through scripts/bench-coldstart.sh, which builds everything first.

For side-by-side comparisons of two builds: AETHER_BENCH_BIN picks the `aether` binary (default
.build/release/aether; aether takes the Python SDK from AETHER_PYTHON_SDK if set), and
AETHER_BENCH_BASELINE=DIR runs a second orchestrator from another checkout's release build
(DIR/.build/release/aether, its hello-swift and its sdk/python) beside it, alternating every
sample between the two, and prints both tables and the ratios. AETHER_BENCH_EXAMPLES=heavy-numpy
(a list of hello-python, notes-api, hello-swift, heavy-numpy; all by default) measures only those,
and AETHER_BENCH_WARM_POOL=0 runs without the warm pool (every restore on the request path).
heavy-numpy imports numpy from its own virtualenv (`requirements:`): the first run builds it with pip
from the package index, into state_dir/venvs, where later runs (and `aether up -c
examples/aetherless.yaml`) find it. AETHER_BENCH_MODES=restore
measures only (b) and (c) (a list of cold, restore, fork; all by default; AETHER_BENCH_MEMORY=0
skips the memory table), and AETHER_BENCH_RAW=1 also prints every restore sample as
`RAW <function> <time to first response ms> <criu restore ms>`.

Every sample also goes into CSV files in AETHER_BENCH_OUT (default bench-results/coldstart), which
scripts/bench-coldstart.sh then plots (scripts/bench/plot.py): samples.csv (side, example, mode,
ms: one row per client-side sample; mode cold, restore, fork, warm or restore-after-idle),
orchestrator.csv (the same columns for the orchestrator's x-aether-restore-ms: criu-restore, fork,
criu-restore-after-idle) and memory.csv (the memory table's rows).

(b) is measured right after the function scaled to zero. A second table repeats (b) after the
machine has idled AETHER_BENCH_IDLE_S seconds first (default 3; 0 skips it),
AETHER_BENCH_IDLE_SAMPLES times per function (default 8): requests to a scaled-to-zero
function rarely come right after it scaled down (BENCHMARKS.md, "Restores after a second of idle").

Before the counted samples, AETHER_BENCH_WARMUP rounds (default 1) of every cell are taken and
dropped, as benchmark tools do (hyperfine's --warmup): a run's very first request pays once for
the client's and the orchestrator's first-time work.
"""

import csv
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AETHER = os.environ.get("AETHER_BENCH_BIN") or os.path.join(REPO, ".build", "release", "aether")
MODES = [
    m for m in ("cold", "restore", "fork") if m in os.environ.get("AETHER_BENCH_MODES", "cold,restore,fork").split(",")
]
#: The `snapshot:` value of each mode, and the start it must show (x-aether-cold-start).
SNAPSHOT = {"cold": "false", "restore": "criu", "fork": "fork"}
START = {"cold": "spawn", "restore": "restore", "fork": "fork"}
MEMORY = os.environ.get("AETHER_BENCH_MEMORY", "1") != "0"
MEMORY_INSTANCES = 10
SAMPLES = int(sys.argv[1]) if len(sys.argv) > 1 else 15
IDLE_S = float(os.environ.get("AETHER_BENCH_IDLE_S", "3"))
IDLE_SAMPLES = int(os.environ.get("AETHER_BENCH_IDLE_SAMPLES", "8"))
#: Rounds of every cell taken first and not counted (AETHER_BENCH_WARMUP, default 1).
WARMUP = int(os.environ.get("AETHER_BENCH_WARMUP", "1"))
BUDGET_MS = 15.0
#: The warm pool of the timing run: places for every snapshot function (2 copies each) by default;
#: AETHER_BENCH_WARM_POOL=0 puts every restore and fork on the request path.
WARM_POOL = os.environ.get("AETHER_BENCH_WARM_POOL")

BASELINE = os.environ.get("AETHER_BENCH_BASELINE")
#: Where the CSV files go.
OUT = os.environ.get("AETHER_BENCH_OUT") or os.path.join(REPO, "bench-results", "coldstart")


def examples(checkout: str) -> list[tuple[str, str, str]]:
    every = [
        ("hello-python", os.path.join(REPO, "examples", "hello-python", "handler.py"), "/?name=bench"),
        ("notes-api", os.path.join(REPO, "examples", "notes-api", "handler.py"), "/health"),
        ("hello-swift", os.path.join(checkout, ".build", "release", "hello-swift"), "/?name=bench"),
        ("heavy-numpy", os.path.join(REPO, "examples", "heavy-numpy", "handler.py"), "/?x=1.5"),
    ]
    chosen = os.environ.get("AETHER_BENCH_EXAMPLES")
    return [e for e in every if e[0] in chosen.split(",")] if chosen else every


EXAMPLES = examples(REPO)

#: Settings an example needs beside its handler: heavy-numpy's virtualenv (`requirements:`, built by
#: the first `up` from the package index into state_dir/venvs, reused after) and its environment,
#: as in examples/aetherless.yaml.
EXTRA = {
    "heavy-numpy": [
        f"    requirements: {os.path.join(REPO, 'examples', 'heavy-numpy', 'requirements.txt')}",
        "    environment:",
        '      OPENBLAS_NUM_THREADS: "1"',
    ],
}
#: The first `up` may build virtualenvs with pip (numpy: a download of ~16 MB).
START_TIMEOUT_S = 600


def config(
    work: str, images: str, first_port: int = 18700, checkout: str = REPO, confinement: bool = True
) -> tuple[str, dict]:
    snapshot_modes = [m for m in MODES if m != "cold"]
    warm_pool = int(WARM_POOL) if WARM_POOL is not None else max(1, 2 * len(examples(checkout)) * len(snapshot_modes))
    lines = [
        "orchestrator:",
        f"  confinement: {'true' if confinement else 'false'}",
        f"  control_socket: {work}/aether.sock",
        # Our own image folder on tmpfs, not the default one another orchestrator may use.
        f"  snapshot_dir: {images}",
        # Wide enough to measure slow restores instead of refusing them; the table counts
        # the ones over the 15 ms rule.
        "  restore_timeout_ms: 100",
        # A warm pool with places for every snapshot function (2 copies each): the default pool
        # of 10 would leave the last ones restoring or forking on the request path.
        f"  warm_pool_size: {warm_pool}",
        "  warm_pool_memory_mb: 4096",
        # The interpreter examples/aetherless.yaml uses (the one scripts/setup.sh installs).
        "  python: /usr/bin/python3",
        "functions:",
    ]
    ports = {}
    port = first_port
    for name, handler, _ in examples(checkout):
        for mode in MODES:
            snapshot = SNAPSHOT[mode]
            fid = f"{name}-{mode}"
            ports[fid] = port
            lines += [
                f"  - id: {fid}",
                f"    trigger_port: {port}",
                f"    handler_path: {handler}",
                f"    snapshot: {snapshot}",
                "    min_warm: 0",
                "    max_instances: 1",
                "    idle_timeout_ms: 100",
                *EXTRA.get(name, []),
            ]
            port += 1
    path = os.path.join(work, "bench.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path, ports


def aether(*args, socket_path, binary=AETHER):
    return subprocess.run([binary, *args, "--socket", socket_path], capture_output=True, text=True, timeout=30)


def instances(fid: str, socket_path: str) -> int:
    out = aether("stats", fid, "--json", socket_path=socket_path)
    if out.returncode != 0:
        raise RuntimeError(f"aether stats {fid}: {out.stderr}")
    return len(json.loads(out.stdout)["instances"])


class Response:
    """What `timed_get` read: the status and the headers (lower-case names) of one response."""

    def __init__(self, status: int, headers: dict):
        self.status = status
        self.headers = headers

    def getheader(self, name: str):
        return self.headers.get(name.lower())


def timed_get(port: int, path: str) -> tuple[float, Response, bytes]:
    """One GET on a new connection, timed from before connect until the last byte of the body
    (Content-Length) has arrived. The client is a socket and a few lines of parsing, not
    http.client: http.client's own work (its header parsing goes through the email package)
    added 0.36 ms to every sample, measured against nginx on this machine (BENCHMARKS.md)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                raise RuntimeError(f"port {port}: connection closed before the response head: {data[:300]!r}")
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        elapsed = (time.perf_counter() - began) * 1000
    status = int(lines[0].split(" ")[1])
    if status != 200:
        raise RuntimeError(f"port {port}: HTTP {status}: {body[:300]!r}")
    return elapsed, Response(status, headers), body


def wait_for_zero(fid: str, socket_path: str):
    deadline = time.monotonic() + 10
    while instances(fid, socket_path) != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{fid} did not scale to zero")
        time.sleep(0.02)


#: Every orchestrator of the run, for `wait_for_full_pools`.
SIDES: list = []
#: AETHER_BENCH_SETTLE=0: take each sample as soon as its function is at zero, even while another
#: function's pool refill (a criu restore, or a fork and its cgroup moves) is running.
SETTLE = os.environ.get("AETHER_BENCH_SETTLE", "1") != "0"


def wait_for_full_pools(timeout: float = 3.0):
    """Waits until every orchestrator's warm pool holds all its copies again. The samples of
    different functions follow each other within milliseconds, so without this wait a sample
    often lands on the refill the previous sample started (25 ms after its start), and measures
    that CPU work too: fork samples, which follow restore samples, paid 2.5-3 ms for the restore
    functions' criu refills (BENCHMARKS.md, "Start modes")."""
    if not SETTLE:
        return
    deadline = time.monotonic() + timeout
    for side in SIDES:
        while time.monotonic() < deadline:
            out = aether("stats", "--json", socket_path=side.socket_path, binary=side.binary)
            pool = json.loads(out.stdout).get("warm_pool") if out.returncode == 0 else None
            if not pool or pool["copies"] >= side.pool_target:
                break
            time.sleep(0.02)
    # The `aether stats` processes just run (a Swift binary's start and exit) would otherwise
    # share the CPUs with the request: 1-2 ms more for every mode, measured.
    time.sleep(0.05)


def first_request(fid: str, port: int, target: str, socket_path: str, idle_s: float = 0.0):
    """Times the first request after `fid` scaled to zero (and, with `idle_s`, after the machine
    idled that long); checks it was served by the start the function's mode promises."""
    wait_for_zero(fid, socket_path)
    wait_for_full_pools()
    time.sleep(idle_s)
    elapsed, response, _ = timed_get(port, target)
    kind = response.getheader("x-aether-cold-start")
    expected = START[fid.rsplit("-", 1)[1]]
    if kind != expected:
        raise RuntimeError(f"{fid}: expected a {expected} start, got {kind}")
    return elapsed, response


def percentile(values, p):
    """Nearest rank: the smallest sample with at least `p` of them at or below it (with 20
    samples p99 is the largest; with 100 the 99th)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered) - 1e-9) - 1))]


class Side:
    """One orchestrator under test: a binary, its example functions and its own ports."""

    def __init__(self, label: str, binary: str, checkout: str, first_port: int, confinement: bool = True):
        self.label = label
        self.binary = binary
        self.work = tempfile.mkdtemp(prefix="aether-coldstart-")
        os.chmod(self.work, 0o755)  # the control socket's folder: confined handlers reach only theirs
        self.images = tempfile.mkdtemp(prefix="aether-coldstart-images-", dir="/dev/shm")
        self.path, self.ports = config(self.work, self.images, first_port, checkout, confinement)
        # The copies its pool holds when no refill runs: 2 per snapshot function, as far as it has room.
        snapshot_functions = len(examples(checkout)) * len([m for m in MODES if m != "cold"])
        self.pool_target = min(
            int(WARM_POOL) if WARM_POOL is not None else 2 * snapshot_functions, 2 * snapshot_functions)
        self.socket_path = f"{self.work}/aether.sock"
        self.log = open(os.path.join(self.work, "aether.log"), "w")
        environment = dict(os.environ)
        if checkout != REPO:
            environment["AETHER_PYTHON_SDK"] = os.path.join(checkout, "sdk", "python")
        self.up = subprocess.Popen([binary, "up", "-c", self.path], stdout=self.log, stderr=self.log, env=environment)
        # cold, restored, warm, criu restore ms, forked, fork ms
        self.rows = {name: ([], [], [], [], [], []) for name, _, _ in EXAMPLES}
        self.idle_rows = {}

    def wait_serving(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while (
            aether("list", socket_path=self.socket_path, binary=self.binary).returncode != 0
            or "serving" not in open(self.log.name).read()
        ):
            if self.up.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: aether up did not start:\n" + open(self.log.name).read())
            time.sleep(0.1)

    def sample(self, name: str, target: str):
        cold, restored, warm, restore_ms, forked, fork_ms = self.rows[name]
        for mode, bucket in (("cold", cold), ("restore", restored), ("fork", forked)):
            if mode not in MODES:
                continue
            fid = f"{name}-{mode}"
            elapsed, response = first_request(fid, self.ports[fid], target, self.socket_path)
            bucket.append(elapsed)
            if mode == "fork":
                fork_ms.append(float(response.getheader("x-aether-restore-ms")))
            if mode == "restore":
                restore_ms.append(float(response.getheader("x-aether-restore-ms")))
                elapsed, response, _ = timed_get(self.ports[fid], target)
                if response.getheader("x-aether-cold-start") == "no":
                    warm.append(elapsed)

    def warm_up(self, name: str, target: str):
        for mode in MODES:
            fid = f"{name}-{mode}"
            first_request(fid, self.ports[fid], target, self.socket_path)
            timed_get(self.ports[fid], target)

    def idle_sample(self, name: str, target: str):
        fid = f"{name}-restore"
        elapsed, response = first_request(fid, self.ports[fid], target, self.socket_path, IDLE_S)
        restored, restore_ms = self.idle_rows.setdefault(name, ([], []))
        restored.append(elapsed)
        restore_ms.append(float(response.getheader("x-aether-restore-ms")))

    def stop(self):
        aether("down", socket_path=self.socket_path, binary=self.binary)
        try:
            self.up.wait(30)
        except subprocess.TimeoutExpired:
            self.up.kill()
        self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.images, ignore_errors=True)


def print_tables(side: Side):
    print(f"time to first response, client side (connect + request + full response), milliseconds: {side.label}")
    print()
    print(
        "| function | (a) cold start p50 / p99 | (b) restore p50 / p99 | (d) fork p50 / p99 | (c) warm p50 / p99 "
        "| (b)/(a) p50 | (d)/(a) p50 | criu restore p50 / p99 | fork p50 / p99 | restores over 15 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")

    def cell(values, digits=1):
        return f"{statistics.median(values):.{digits}f} / {percentile(values, 0.99):.{digits}f}" if values else "-"

    def ratio(values, cold):
        return f"{statistics.median(values) / statistics.median(cold):.2f}" if values and cold else "-"

    for name, (cold, restored, warm, restore_ms, forked, fork_ms) in side.rows.items():
        over = sum(1 for v in restore_ms if v > BUDGET_MS)
        print(
            f"| {name} | {cell(cold)} | {cell(restored)} | {cell(forked)} | {cell(warm, 2)} "
            f"| {ratio(restored, cold)} | {ratio(forked, cold)} | {cell(restore_ms)} | {cell(fork_ms, 2)} "
            f"| {over}/{len(restore_ms)} |"
        )
    if side.idle_rows:
        print()
        print(f"(b) again, each restore after the machine idled {IDLE_S:g} s ({IDLE_SAMPLES} samples per function)")
        print()
        print("| function | (b) after idle p50 / p99 | criu restore p50 / p99 | restores over 15 ms |")
        print("|---|---|---|---|")
        for name, (restored, restore_ms) in side.idle_rows.items():
            over = sum(1 for v in restore_ms if v > BUDGET_MS)
            print(
                f"| {name} | {statistics.median(restored):.1f} / {percentile(restored, 0.99):.1f} "
                f"| {statistics.median(restore_ms):.1f} / {percentile(restore_ms, 0.99):.1f} "
                f"| {over}/{len(restore_ms)} |"
            )


def write_csv(name: str, header: list[str], rows) -> str:
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_samples(sides: list) -> list[str]:
    """samples.csv and orchestrator.csv: every sample of every side, as measured (ms, 3 decimals)."""
    client, orchestrator = [], []
    for side in sides:
        for name, (cold, restored, warm, restore_ms, forked, fork_ms) in side.rows.items():
            for mode, values in (("cold", cold), ("restore", restored), ("fork", forked), ("warm", warm)):
                client += [(side.label, name, mode, f"{v:.3f}") for v in values]
            for mode, values in (("criu-restore", restore_ms), ("fork", fork_ms)):
                orchestrator += [(side.label, name, mode, f"{v:.3f}") for v in values]
        for name, (restored, restore_ms) in side.idle_rows.items():
            client += [(side.label, name, "restore-after-idle", f"{v:.3f}") for v in restored]
            orchestrator += [(side.label, name, "criu-restore-after-idle", f"{v:.3f}") for v in restore_ms]
    header = ["side", "example", "mode", "ms"]
    return [write_csv("samples.csv", header, client), write_csv("orchestrator.csv", header, orchestrator)]


def print_ratios(current: Side, baseline: Side):
    print()
    print(f"A/B, p50 ratio {current.label} / {baseline.label} (below 1: this build is faster), same run, samples alternated")
    print()
    print("| function | (a) cold start | (b) restore | (c) warm | criu restore | (d) fork | fork |")
    print("|---|---|---|---|---|---|---|")
    for name in current.rows:
        cells = []
        for mine, theirs in zip(current.rows[name], baseline.rows[name]):
            cells.append(f"{statistics.median(mine) / statistics.median(theirs):.2f}" if mine and theirs else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main():
    if os.environ.get("AETHER_BENCH_ONLY_MEMORY"):
        print("CSV: " + os.path.relpath(memory_table()))
        return
    if BASELINE:
        baseline = os.path.abspath(BASELINE)
        sides = [
            Side("this build", AETHER, REPO, 18700),
            Side(f"baseline {baseline}", os.path.join(baseline, ".build", "release", "aether"), baseline, 18800),
        ]
    else:
        # The cost of confinement (SECURITY.md): the same build with it on (the default) and off.
        sides = [
            Side("confinement on (default)", AETHER, REPO, 18700),
            Side("confinement: false", AETHER, REPO, 18800, confinement=False),
        ]
    SIDES.extend(sides)
    try:
        for side in sides:
            side.wait_serving()
        # Rounds that are not counted: the first request of a run also pays for first-time work
        # in the client and the orchestrator (its first
        # connection on each loop), 10-20 ms once, which is not a start.
        for _ in range(WARMUP):
            for name, _, target in EXAMPLES:
                for side in sides:
                    side.warm_up(name, target)
        for name, _, target in EXAMPLES:
            for index in range(SAMPLES):
                # Alternate which build goes first, so neither always follows the other.
                for side in sides if index % 2 == 0 else list(reversed(sides)):
                    side.sample(name, target)
        if IDLE_S > 0 and "restore" in MODES:
            for name, _, target in EXAMPLES:
                for index in range(IDLE_SAMPLES):
                    for side in sides if index % 2 == 0 else list(reversed(sides)):
                        side.idle_sample(name, target)
    finally:
        for side in sides:
            side.stop()

    if os.environ.get("AETHER_BENCH_RAW"):
        for side in sides:
            for name, (_, restored, _, restore_ms, _, _) in side.rows.items():
                for elapsed, criu in zip(restored, restore_ms):
                    print(f"RAW {side.label} {name} {elapsed:.3f} {criu:.3f}")
    written = write_samples(sides)
    print(f"machine: {os.cpu_count()} cores, kernel {os.uname().release}; {SAMPLES} samples per cell")
    for side in sides:
        print()
        print_tables(side)
    if len(sides) == 2:
        print_ratios(sides[0], sides[1])
    if MEMORY:
        print()
        written.append(memory_table())
    print()
    print("CSV: " + " ".join(os.path.relpath(p) for p in written))


def memory_of(pid: int) -> tuple[int, int]:
    """PSS and USS (private clean + dirty) of `pid`, in KiB."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1])
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


def memory_table():
    """PSS and USS of MEMORY_INSTANCES live instances of each example per start mode (cold-started,
    restored, forked), with confinement on; for fork, the template's too (it lives as long as its
    copies), not the copies the warm pool keeps ahead of demand. The restores at `up` are
    `min_warm` starts no request waits for, so they are not held to restore_timeout_ms (ten at
    once take 130-200 ms each here)."""
    modes = list(MODES)
    work = tempfile.mkdtemp(prefix="aether-memory-")
    os.chmod(work, 0o755)
    images = tempfile.mkdtemp(prefix="aether-memory-images-", dir="/dev/shm")
    lines = [
        "orchestrator:",
        f"  control_socket: {work}/aether.sock",
        f"  snapshot_dir: {images}",
        "  restore_timeout_ms: 100",
        f"  warm_pool_size: {MEMORY_INSTANCES * len(EXAMPLES) * len(modes)}",
        "  python: /usr/bin/python3",
        "functions:",
    ]
    port = 18900
    functions = []
    for name, handler, _ in EXAMPLES:
        for mode in modes:
            fid = f"{name}-{mode}-memory"
            functions.append((name, mode, fid))
            lines += [
                f"  - id: {fid}", f"    trigger_port: {port}", f"    handler_path: {handler}",
                f"    snapshot: {SNAPSHOT[mode]}", f"    min_warm: {MEMORY_INSTANCES}",
                f"    max_instances: {MEMORY_INSTANCES}", "    idle_timeout_ms: 600000",
                *EXTRA.get(name, []),
            ]
            port += 1
    path = os.path.join(work, "memory.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    socket_path = f"{work}/aether.sock"
    log = open(os.path.join(work, "aether.log"), "w")
    up = subprocess.Popen([AETHER, "up", "-c", path], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if up.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("memory run: aether up did not start:\n" + open(log.name).read())
            try:
                if all(instances(fid, socket_path) == MEMORY_INSTANCES for _, _, fid in functions):
                    break
            except RuntimeError:  # not serving yet: the functions are being started
                pass
            time.sleep(0.5)
        time.sleep(2)  # let the instances settle (imports done, pages touched)
        templates = {}
        for line in open(log.name):
            if "fork template ready" in line:
                fid = line.split("function=")[1].split()[0]
                templates[fid] = int(line.split(" pid=")[1].split()[0])
        print(f"memory of {MEMORY_INSTANCES} live instances per start mode (confinement on), KiB; "
              "fork includes its template")
        print()
        # "One instance": a cold-started one's PSS (its pages are its own but for shared
        # libraries), the memory a single instance of the function costs.
        print("| function | mode | PSS of one instance | PSS sum | USS sum | PSS sum / PSS of one |")
        print("|---|---|---|---|---|---|")
        one = {}
        rows = []
        for name, mode, fid in sorted(functions, key=lambda f: f[1] != "cold"):
            out = aether("stats", fid, "--json", socket_path=socket_path)
            pids = [i["pid"] for i in json.loads(out.stdout)["instances"]]
            if fid in templates:
                pids.append(templates[fid])
            measured = [memory_of(pid) for pid in pids]
            pss = [p for p, _ in measured]
            uss = [u for _, u in measured]
            one.setdefault(name, statistics.median(pss[:MEMORY_INSTANCES]))
            print(f"| {name} | {mode} | {one[name]:.0f} | {sum(pss)} | {sum(uss)} | {sum(pss) / one[name]:.1f} |")
            rows.append((name, mode, len(pids), f"{one[name]:.0f}", sum(pss), sum(uss)))
        return write_csv("memory.csv", ["example", "mode", "processes", "pss_one_kib", "pss_sum_kib", "uss_sum_kib"],
                         rows)
    finally:
        aether("down", socket_path=socket_path)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(images, ignore_errors=True)


if __name__ == "__main__":
    main()
