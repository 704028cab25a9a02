"""Time to first response of the example functions: (a) cold start of a new process,
(b) restore from the CRIU snapshot, (c) an instance already running. One run, one machine.

Run through scripts/bench-coldstart.sh, which builds everything first.

For side-by-side comparisons of two builds: AETHER_BENCH_BIN picks the `aether` binary (default
.build/release/aether; aether takes the Python SDK from AETHER_PYTHON_SDK if set),
AETHER_BENCH_MODES=restore measures only (b) and (c), and AETHER_BENCH_RAW=1 also prints every
restore sample as `RAW <function> <time to first response ms> <criu restore ms>`.

(b) is measured right after the function scaled to zero. A second table repeats (b) after the
machine has idled AETHER_BENCH_IDLE_S seconds first (default 3; 0 skips it),
AETHER_BENCH_IDLE_SAMPLES times per function (default 8): requests to a scaled-to-zero
function rarely come right after it scaled down (BENCHMARKS.md, "Restores after a second of idle").
"""

import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AETHER = os.environ.get("AETHER_BENCH_BIN") or os.path.join(REPO, ".build", "release", "aether")
MODES = [m for m in ("cold", "restore") if m in os.environ.get("AETHER_BENCH_MODES", "cold,restore").split(",")]
SAMPLES = int(sys.argv[1]) if len(sys.argv) > 1 else 15
IDLE_S = float(os.environ.get("AETHER_BENCH_IDLE_S", "3"))
IDLE_SAMPLES = int(os.environ.get("AETHER_BENCH_IDLE_SAMPLES", "8"))
BUDGET_MS = 15.0

EXAMPLES = [
    ("hello-python", os.path.join(REPO, "examples", "hello-python", "handler.py"), "/?name=bench"),
    ("notes-api", os.path.join(REPO, "examples", "notes-api", "handler.py"), "/health"),
    ("hello-swift", os.path.join(REPO, ".build", "release", "hello-swift"), "/?name=bench"),
]


def config(work: str, images: str) -> tuple[str, dict]:
    lines = [
        "orchestrator:",
        f"  control_socket: {work}/aether.sock",
        # Our own image folder on tmpfs, not the default one another orchestrator may use.
        f"  snapshot_dir: {images}",
        # Wide enough to measure slow restores instead of refusing them; the table counts
        # the ones over the 15 ms rule.
        "  restore_timeout_ms: 100",
        # The interpreter examples/aetherless.yaml uses (the one scripts/setup.sh installs).
        "  python: /usr/bin/python3",
        "functions:",
    ]
    ports = {}
    port = 18700
    for name, handler, _ in EXAMPLES:
        for mode, snapshot in (("cold", "false"), ("restore", "true")):
            if mode not in MODES:
                continue
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
            ]
            port += 1
    path = os.path.join(work, "bench.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path, ports


def aether(*args, socket_path):
    return subprocess.run([AETHER, *args, "--socket", socket_path], capture_output=True, text=True, timeout=30)


def instances(fid: str, socket_path: str) -> int:
    out = aether("stats", fid, "--json", socket_path=socket_path)
    return len(json.loads(out.stdout)["instances"])


def timed_get(port: int, path: str) -> tuple[float, http.client.HTTPResponse, bytes]:
    began = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    elapsed = (time.perf_counter() - began) * 1000
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"port {port}: HTTP {response.status}: {body[:300]!r}")
    return elapsed, response, body


def wait_for_zero(fid: str, socket_path: str):
    deadline = time.monotonic() + 10
    while instances(fid, socket_path) != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{fid} did not scale to zero")
        time.sleep(0.02)


def first_request(fid: str, port: int, target: str, socket_path: str, idle_s: float = 0.0):
    """Times the first request after `fid` scaled to zero (and, with `idle_s`, after the machine
    idled that long); checks it was served by the start the function's mode promises."""
    wait_for_zero(fid, socket_path)
    time.sleep(idle_s)
    elapsed, response, _ = timed_get(port, target)
    kind = response.getheader("x-aether-cold-start")
    expected = "spawn" if fid.endswith("-cold") else "restore"
    if kind != expected:
        raise RuntimeError(f"{fid}: expected a {expected} start, got {kind}")
    return elapsed, response


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p * len(ordered) + 0.5)) - 1))]


def main():
    work = tempfile.mkdtemp(prefix="aether-coldstart-")
    images = tempfile.mkdtemp(prefix="aether-coldstart-images-", dir="/dev/shm")
    path, ports = config(work, images)
    socket_path = f"{work}/aether.sock"
    log = open(os.path.join(work, "aether.log"), "w")
    up = subprocess.Popen([AETHER, "up", "-c", path], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while aether("list", socket_path=socket_path).returncode != 0 or "serving" not in open(log.name).read():
            if up.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("aether up did not start:\n" + open(log.name).read())
            time.sleep(0.1)
        rows = []
        for name, _, target in EXAMPLES:
            cold, restored, warm, restore_ms = [], [], [], []
            for _ in range(SAMPLES):
                for mode, bucket in (("cold", cold), ("restore", restored)):
                    if mode not in MODES:
                        continue
                    fid = f"{name}-{mode}"
                    elapsed, response = first_request(fid, ports[fid], target, socket_path)
                    bucket.append(elapsed)
                    if mode == "restore":
                        restore_ms.append(float(response.getheader("x-aether-restore-ms")))
                        elapsed, response, _ = timed_get(ports[fid], target)
                        if response.getheader("x-aether-cold-start") == "no":
                            warm.append(elapsed)
            rows.append((name, cold, restored, warm, restore_ms))
        idle_rows = []
        if IDLE_S > 0 and "restore" in MODES:
            for name, _, target in EXAMPLES:
                fid = f"{name}-restore"
                samples = [first_request(fid, ports[fid], target, socket_path, IDLE_S) for _ in range(IDLE_SAMPLES)]
                restored = [elapsed for elapsed, _ in samples]
                restore_ms = [float(response.getheader("x-aether-restore-ms")) for _, response in samples]
                idle_rows.append((name, restored, restore_ms))
    finally:
        aether("down", socket_path=socket_path)
        up.wait(30)
        log.close()

    if os.environ.get("AETHER_BENCH_RAW"):
        for name, _, restored, _, restore_ms in rows:
            for elapsed, criu in zip(restored, restore_ms):
                print(f"RAW {name} {elapsed:.3f} {criu:.3f}")
    print(f"machine: {os.cpu_count()} cores, kernel {os.uname().release}; {SAMPLES} samples per cell")
    print("time to first response, client side (connect + request + full response), milliseconds")
    print()
    print("| function | (a) cold start p50 / p99 | (b) restore p50 / p99 | (c) warm p50 / p99 | (b)/(a) p50 | criu restore p50 / p99 | restores over 15 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, cold, restored, warm, restore_ms in rows:
        over = sum(1 for v in restore_ms if v > BUDGET_MS)
        cold_cell = f"{statistics.median(cold):.1f} / {percentile(cold, 0.99):.1f}" if cold else "-"
        ratio = f"{statistics.median(restored) / statistics.median(cold):.2f}" if cold else "-"
        print(
            f"| {name} | {cold_cell} "
            f"| {statistics.median(restored):.1f} / {percentile(restored, 0.99):.1f} "
            f"| {statistics.median(warm):.2f} / {percentile(warm, 0.99):.2f} "
            f"| {ratio} "
            f"| {statistics.median(restore_ms):.1f} / {percentile(restore_ms, 0.99):.1f} "
            f"| {over}/{len(restore_ms)} |"
        )
    if idle_rows:
        print()
        print(f"(b) again, each restore after the machine idled {IDLE_S:g} s ({IDLE_SAMPLES} samples per function)")
        print()
        print("| function | (b) after idle p50 / p99 | criu restore p50 / p99 | restores over 15 ms |")
        print("|---|---|---|---|")
        for name, restored, restore_ms in idle_rows:
            over = sum(1 for v in restore_ms if v > BUDGET_MS)
            print(
                f"| {name} | {statistics.median(restored):.1f} / {percentile(restored, 0.99):.1f} "
                f"| {statistics.median(restore_ms):.1f} / {percentile(restore_ms, 0.99):.1f} "
                f"| {over}/{len(restore_ms)} |"
            )
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(images, ignore_errors=True)


if __name__ == "__main__":
    main()
