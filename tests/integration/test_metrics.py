"""/metrics under load, read with a real Prometheus parser (prometheus_client's
text_string_to_metric_families, run with the test virtualenv's python: scripts/test-venv.sh,
which scripts/test.sh names in AETHER_TEST_VENV_PYTHON). Every family's type is checked, and the
histograms against the requests sent, over two instances."""

import json
import os
import subprocess
import threading
import unittest

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness

VENV_PYTHON = os.environ.get("AETHER_TEST_VENV_PYTHON", "")

# What the scraper is given: the text on stdin; what it prints: every sample, as JSON.
PARSE = r"""
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {
        "type": family.type,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
json.dump(families, sys.stdout)
"""

# Every family README lists, with its Prometheus type (the parser names a counter family without
# its _total suffix).
TYPES = {
    "faas_invocations": "counter",
    "faas_invoke_duration_seconds": "histogram",
    "faas_queue_wait_seconds": "histogram",
    "faas_start_duration_seconds": "histogram",
    "aether_ring_crc_errors": "counter",
    "faas_errors": "counter",
    "faas_timeouts": "counter",
    "faas_coldstarts": "counter",
    "aether_latency_window": "gauge",
    "aether_rejected": "counter",
    "aether_unauthorized": "counter",
    "aether_instance_crashes": "counter",
    "aether_queue_depth": "gauge",
    "aether_instances": "gauge",
    "aether_restores": "counter",
    "aether_restore_failures": "counter",
    "aether_restore_latency_violations": "counter",
    "aether_ebpf_steered_connections": "counter",
    "aether_ebpf_steer_failures": "counter",
    "aether_ebpf_held_syns": "counter",
}
BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
           2.5, 5.0, 10.0, 30.0, float("inf")]


@unittest.skipUnless(
    VENV_PYTHON or os.environ.get("AETHER_REQUIRE_FRAMEWORKS"),
    "needs the test virtualenv with prometheus_client (scripts/test-venv.sh; scripts/test.sh sets "
    "AETHER_TEST_VENV_PYTHON)",
)
class MetricsTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.assertTrue(os.access(VENV_PYTHON, os.X_OK), f"AETHER_TEST_VENV_PYTHON={VENV_PYTHON!r}")
        self.write_common_handler()

    def parse(self, text: str) -> dict:
        result = subprocess.run([VENV_PYTHON, "-c", PARSE], input=text, capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0, f"the parser refused /metrics: {result.stderr}\n{text}")
        return json.loads(result.stdout)

    def test_metrics_parse_and_histograms_add_up_over_two_instances(self):
        fn = self.function("prom", min_warm=2, max_instances=2, concurrency=1, timeout_ms=10000)
        metrics_port = self.free_port()
        self.start(self.write_config([fn], orchestrator={"metrics_port": metrics_port}))
        self.wait_serving(fn["id"])
        harness.wait_until(
            lambda: sum(i["phase"] == "serving" for i in self.instances(fn["id"])) == 2, timeout=20)
        port = fn["trigger_port"]

        # Concurrent clients on their own connections: 8 threads x 25 requests, each sleeping a
        # little in the handler so that both instances are busy at once.
        threads, per_thread = 8, 25
        outcomes: list[int] = []
        lock = threading.Lock()
        instances: set[str] = set()

        def client(number: int):
            for i in range(per_thread):
                path = "/sleep?s=0.005" if i % 5 else "/json"
                r = harness.http_request(port, path=path, timeout=30)
                with lock:
                    outcomes.append(r.status)
                    instances.add(r.headers.get("x-aether-instance"))

        workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        # One scrape while the load runs: it must parse too.
        self.parse(self.get(metrics_port, "/metrics").body.decode())
        for w in workers:
            w.join(120)
        # Three more with other status classes: a handler error (500) and an unknown route (404).
        extra = [self.get(port, "/raise").status, self.get(port, "/nothing").status]
        sent_ok = threads * per_thread
        self.assertEqual(outcomes, [200] * sent_ok)
        self.assertEqual(extra, [500, 404])
        self.assertEqual(instances, {"0", "1"}, "both instances served")

        r = self.get(metrics_port, "/metrics")
        self.assertStatus(r, 200, "metrics")
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain; version=0.0.4"), r)
        families = self.parse(r.body.decode())

        for name, kind in TYPES.items():
            self.assertIn(name, families, f"family {name} missing; have {sorted(families)}")
            self.assertEqual(families[name]["type"], kind, name)
        mine = lambda name: [s for s in families[name]["samples"] if s[1].get("function") == fn["id"]]  # noqa: E731

        # Counters by status class.
        by_class = {s[1]["status_class"]: s[2] for s in mine("faas_invocations") if s[0] == "faas_invocations_total"}
        self.assertEqual(by_class, {"2xx": sent_ok, "3xx": 0, "4xx": 1, "5xx": 1})
        errors = [s[2] for s in mine("faas_errors") if s[0] == "faas_errors_total"]
        self.assertEqual(errors, [1])

        # The invoke-duration histogram: per status class, cumulative buckets that rise to the
        # +Inf bucket, which equals _count; summed over the classes, the requests sent.
        total = 0
        for status_class in ("2xx", "3xx", "4xx", "5xx"):
            samples = [s for s in mine("faas_invoke_duration_seconds") if s[1]["status_class"] == status_class]
            buckets = {float(s[1]["le"]): s[2] for s in samples if s[0].endswith("_bucket")}
            self.assertEqual(sorted(buckets), BUCKETS, status_class)
            counts = [buckets[b] for b in BUCKETS]
            self.assertEqual(counts, sorted(counts), f"{status_class} buckets are cumulative: {counts}")
            count = next(s[2] for s in samples if s[0].endswith("_count"))
            total_sum = next(s[2] for s in samples if s[0].endswith("_sum"))
            self.assertEqual(buckets[float("inf")], count, status_class)
            total += count
            if status_class == "2xx":
                # 4 of 5 requests slept 5 ms in the handler: the sum is at least that, and far
                # below the whole run's time (each request well under a second).
                self.assertGreaterEqual(total_sum, sent_ok * 4 / 5 * 0.005)
                self.assertLess(total_sum, sent_ok * 1.0)
                self.assertEqual(buckets[0.001] <= sent_ok / 5 + 1, True, buckets)
                self.assertEqual(buckets[30.0], sent_ok)
        self.assertEqual(total, sent_ok + 2, "sum of +Inf buckets = requests sent")

        # Queue wait: every request that reached an instance, once.
        queue = {s[0]: s[2] for s in mine("faas_queue_wait_seconds") if "le" not in s[1]}
        self.assertEqual(queue["faas_queue_wait_seconds_count"], sent_ok + 2)
        self.assertGreaterEqual(queue["faas_queue_wait_seconds_sum"], 0)

        # Two instances spawned and started (by kind spawn).
        starts = [s for s in mine("faas_start_duration_seconds") if s[0].endswith("_count")]
        self.assertEqual([(s[1]["kind"], s[2]) for s in starts], [("spawn", 2)])
        start_sum = next(s[2] for s in mine("faas_start_duration_seconds") if s[0].endswith("_sum"))
        self.assertGreater(start_sum, 0)
        self.assertLess(start_sum, 40)

        # Gauges: two serving instances, nothing queued; no CRC errors.
        phases = {s[1]["phase"]: s[2] for s in mine("aether_instances")}
        self.assertEqual(phases, {"starting": 0, "attaching": 0, "serving": 2, "stopping": 0})
        self.assertEqual([s[2] for s in mine("aether_queue_depth")], [0])
        self.assertEqual([s[2] for s in mine("aether_ring_crc_errors") if s[0].endswith("_total")], [0])

        # The eBPF data plane's per-port counters.
        steered = [s for s in families["aether_ebpf_steered_connections"]["samples"] if s[1]["port"] == str(port)]
        self.assertEqual(len(steered), 1, steered)
        self.assertGreaterEqual(steered[0][2], sent_ok, "every client connection was steered by sk_lookup")

        # The control socket serves the same families.
        over_socket = self.parse(self.aether_metrics())
        self.assertEqual({n: f["type"] for n, f in over_socket.items()}, {n: f["type"] for n, f in families.items()})

    def test_a_removed_function_leaves_no_series_and_a_redeploy_keeps_them(self):
        a = self.function("kept")
        b = self.function("gone")
        metrics_port = self.free_port()
        config = self.write_config([a, b], orchestrator={"metrics_port": metrics_port})
        self.start(config)
        for fn in (a, b):
            for _ in range(3):
                self.assertStatus(self.get(fn["trigger_port"], "/json"), 200)

        def functions_in(families: dict) -> set:
            return {s[1].get("function") for f in families.values() for s in f["samples"]}

        self.assertEqual(functions_in(self.parse(self.get(metrics_port, "/metrics").body.decode())), {a["id"], b["id"]})
        self.aether("rm", b["id"])
        # A forced redeploy of the other: a new generation, the same live series.
        self.aether("deploy", "--force", self.write_config([a], name="a.yaml", orchestrator={"metrics_port": metrics_port}))
        self.assertStatus(self.get(a["trigger_port"], "/json"), 200)
        families = self.parse(self.get(metrics_port, "/metrics").body.decode())
        self.assertEqual(functions_in(families), {a["id"]})
        count = sum(s[2] for s in families["faas_invocations"]["samples"] if s[0] == "faas_invocations_total")
        self.assertEqual(count, 4, "the counter went on across the redeploy")

    def test_restores_and_forks_are_histograms_by_kind(self):
        handler = "import aetherless\n\n@aetherless.handler\ndef handle(req):\n    return {'ok': True}\n"
        self.write_file("snap.py", handler)
        common = {"snapshot": True, "min_warm": 0, "max_instances": 2, "idle_timeout_ms": 60000}
        restored = self.function("rst", "snap.py", **common)
        forked = self.function("frk", "snap.py", **{**common, "snapshot": "fork"})
        metrics_port = self.free_port()
        self.start(self.write_config(
            [restored, forked],
            orchestrator={"metrics_port": metrics_port, "restore_timeout_ms": 100, "warm_pool_size": 0}))
        for fn in (restored, forked):
            self.assertStatus(self.get(fn["trigger_port"], "/"), 200)
        families = self.parse(self.get(metrics_port, "/metrics").body.decode())
        for fn, kind in ((restored, "restore"), (forked, "fork")):
            stats = self.stats(fn["id"])["stats"]
            self.assertGreaterEqual(stats["restores"], 1, stats)

            def count(family):
                return {s[1]["kind"]: s[2] for s in families[family]["samples"]
                        if s[1]["function"] == fn["id"] and s[0].endswith("_count")}

            self.assertEqual(count("aether_restore_duration_seconds"), {kind: stats["restores"]})
            self.assertEqual(count("faas_start_duration_seconds"), {kind: stats["starts"][0]["count"]})
            self.assertEqual([s["kind"] for s in stats["starts"]], [kind])
            sums = [s[2] for s in families["aether_restore_duration_seconds"]["samples"]
                    if s[1]["function"] == fn["id"] and s[0].endswith("_sum")]
            self.assertTrue(0 < sums[0] < 0.1 * stats["restores"], sums)

    def aether_metrics(self) -> str:
        result = subprocess.run(
            ["curl", "-sS", "--unix-socket", self.control_socket, "http://aether/metrics"],
            capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout


if __name__ == "__main__":
    unittest.main()
