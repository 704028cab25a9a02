"""Control verbs: list, stats, logs, down, and what they say without an orchestrator."""

import glob
import json
import os
import unittest

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness


class ControlTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_common_handler()

    def test_prometheus_metrics(self):
        fn = self.function("met")
        port = self.free_port()
        self.start(self.write_config([fn], orchestrator={"metrics_port": port}))
        for _ in range(3):
            self.assertStatus(self.get(fn["trigger_port"], "/json"), 200, "request")
        self.assertStatus(self.get(fn["trigger_port"], "/raise"), 500, "handler error")
        r = self.get(port, "/metrics")
        self.assertStatus(r, 200, "metrics")
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain"), r)
        samples = {}
        for line in r.body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        label = f'{{function="{fn["id"]}"}}'
        by_class = f'{{function="{fn["id"]}",status_class="%s"}}'
        self.assertEqual(samples["faas_invocations_total" + by_class % "2xx"], 3)
        self.assertEqual(samples["faas_invocations_total" + by_class % "5xx"], 1)
        self.assertEqual(samples["faas_invocations_total" + by_class % "4xx"], 0)
        self.assertEqual(samples["faas_errors_total" + label], 1)
        self.assertEqual(samples["faas_timeouts_total" + label], 0)
        self.assertEqual(samples["faas_invoke_duration_seconds_count" + by_class % "2xx"], 3)
        self.assertEqual(samples["faas_invoke_duration_seconds_count" + by_class % "5xx"], 1)
        self.assertGreater(samples["faas_invoke_duration_seconds_sum" + by_class % "2xx"], 0)
        self.assertEqual(samples[f'aether_instances{{function="{fn["id"]}",phase="serving"}}'], 1)
        self.assertStatus(self.get(port, "/v1/status"), 404, "only /metrics on the metrics port")

    def test_list_text_and_json(self):
        a = self.function("alpha", max_instances=3, concurrency=2)
        b = self.function("beta")
        orch = self.start(self.write_config([a, b]))

        text = self.aether("list").stdout
        lines = text.strip().splitlines()
        self.assertEqual(lines[0].split(), ["ID", "PORT", "PROTOCOL", "STATE", "LIFECYCLE", "INSTANCES", "PIDS"], text)
        rows = {line.split()[0]: line.split() for line in lines[1:]}
        self.assertEqual(set(rows), {a["id"], b["id"]}, text)
        self.assertEqual(rows[a["id"]][1:6], [str(a["trigger_port"]), "sdk", "running", "Running", "1/3"], text)
        self.assertEqual(rows[b["id"]][1:6], [str(b["trigger_port"]), "sdk", "running", "Running", "1/2"], text)

        doc = self.status()
        self.assertEqual(doc["pid"], orch.pid)
        self.assertEqual(doc["control_socket"], self.control_socket)
        by_id = {f["id"]: f for f in doc["functions"]}
        self.assertEqual(set(by_id), {a["id"], b["id"]})
        fa = by_id[a["id"]]
        self.assertEqual(fa["port"], a["trigger_port"])
        self.assertEqual(fa["protocol"], "sdk")
        self.assertEqual(fa["state"], "running")
        self.assertEqual(fa["lifecycle"], "Running")
        self.assertEqual(fa["max_instances"], 3)
        self.assertEqual(fa["concurrency"], 2)
        self.assertEqual(len(fa["instances"]), 1, fa)
        instance = fa["instances"][0]
        self.assertEqual(instance["phase"], "serving")
        self.assertIsInstance(instance["pid"], int)
        self.assertEqual(rows[a["id"]][6], str(instance["pid"]), text)
        # The pid is a live handler process of this test.
        with open(f"/proc/{instance['pid']}/cmdline", "rb") as f:
            self.assertIn(self.tmp.encode(), f.read())
        # ... and the one answering (confined, the handler's own pid is 1 in its namespace:
        # compare host pids).
        r = self.get(a["trigger_port"], "/json")
        self.assertEqual(harness.instance_pid(r.json()), instance["pid"], r.json())

    def test_stats_counts_invocations(self):
        fn = self.function("stats")
        self.start(self.write_config([fn]))
        before = self.stats(fn["id"])["stats"]
        self.assertEqual(before["invocations"], 0, before)
        self.assertIsNone(before.get("p50_milliseconds"), before)
        for i in range(7):
            self.assertStatus(self.get(fn["trigger_port"], f"/json?i={i}"), 200, f"request {i}")
        self.assertStatus(self.get(fn["trigger_port"], "/raise"), 500, "raise")
        doc = self.stats(fn["id"])
        stats = doc["stats"]
        self.assertEqual(stats["invocations"], 8, stats)
        self.assertEqual(stats["errors"], 1, stats)
        self.assertEqual(stats["timeouts"], 0, stats)
        self.assertEqual(stats["crashes"], 0, stats)
        self.assertEqual(stats["rejected"], 0, stats)
        for key in ("p50_milliseconds", "p95_milliseconds", "p99_milliseconds"):
            self.assertIsInstance(stats[key], (int, float), f"{key} missing: {stats}")
            self.assertGreater(stats[key], 0, stats)
        self.assertLessEqual(stats["p50_milliseconds"], stats["p99_milliseconds"])
        self.assertEqual(sum(i["served"] for i in doc["instances"]), 8, doc["instances"])
        # The all-functions JSON agrees, and the text table shows the count.
        all_stats = json.loads(self.aether("stats", "--json").stdout)
        [entry] = [f for f in all_stats["functions"] if f["id"] == fn["id"]]
        self.assertEqual(entry["stats"]["invocations"], 8)
        text = self.aether("stats", fn["id"]).stdout
        row = [line.split() for line in text.splitlines() if line.startswith(fn["id"])][0]
        self.assertEqual(row[1:3], ["8", "1"], text)

    def test_stats_unknown_function(self):
        fn = self.function("known")
        self.start(self.write_config([fn]))
        for args in (("stats", "nosuch-fn"), ("stats", "nosuch-fn", "--json"), ("logs", "nosuch-fn")):
            result = self.aether(*args, check=False)
            self.assertEqual(result.returncode, 1, f"{args}: {result}")
            self.assertIn("no function", result.stderr, f"{args}: {result.stderr}")

    def test_logs(self):
        fn = self.function("logs")
        self.start(self.write_config([fn]))
        for i in range(3):
            self.assertStatus(self.get(fn["trigger_port"], f"/print?msg=line-{i}"), 200, "print")

        def all_logged():
            out = self.aether("logs", fn["id"]).stdout
            return out if "line-2" in out else None

        out = harness.wait_until(all_logged, 5.0, 0.1)
        self.assertIsNotNone(out, self.aether("logs", fn["id"]).stdout)
        lines = [line for line in out.splitlines() if "line-" in line]
        self.assertEqual(lines, ["[0 stdout] line-0", "[0 stdout] line-1", "[0 stdout] line-2"])
        last = self.aether("logs", fn["id"], "--lines", "2").stdout.splitlines()
        self.assertEqual(last, ["[0 stdout] line-1", "[0 stdout] line-2"])
        # The short form documented as `aether logs ID [-n N]`.
        last = self.aether("logs", fn["id"], "-n", "1").stdout.splitlines()
        self.assertEqual(last, ["[0 stdout] line-2"])

    def test_down_removes_sockets(self):
        a = self.function("downa")
        b = self.function("downb")
        orch = self.start(self.write_config([a, b]))
        folder = os.path.dirname(self.control_socket)
        sockets = sorted(glob.glob(os.path.join(folder, "*.sock")))
        self.assertEqual(
            sockets,
            sorted([self.control_socket, os.path.join(folder, f"fn-{a['id']}-{orch.pid}.sock"),
                    os.path.join(folder, f"fn-{b['id']}-{orch.pid}.sock")]),
        )
        pids = [i["pid"] for f in self.status()["functions"] for i in f["instances"]]
        result = self.aether("down")
        self.assertEqual(result.stdout.strip(), "stopped", result)
        self.assertEqual(orch.wait_exit(10), 0, orch.log())
        self.assertEqual(glob.glob(os.path.join(folder, "*.sock")), [], "sockets left after down")
        for pid in pids:
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"handler {pid} still running")
        self.assertEqual(harness.shm_regions(a["id"]) + harness.shm_regions(b["id"]), [])
        self.assertIn("stopped", orch.stderr())
        after = self.aether("list", check=False)
        self.assertEqual(after.returncode, 1)
        self.assertIn("no orchestrator is running", after.stderr)
        with self.assertRaises(ConnectionRefusedError):
            self.get(a["trigger_port"], "/json", timeout=5)


class NoOrchestratorTest(harness.AetherTestCase):
    def test_commands_without_orchestrator(self):
        self.write_common_handler()
        config = self.write_config([self.function("none")])
        for args in (
            ("list",),
            ("list", "--json"),
            ("stats",),
            ("stats", "x", "--json"),
            ("logs", "x"),
            ("down",),
            ("deploy", config),
        ):
            result = self.aether(*args, check=False)
            self.assertEqual(result.returncode, 1, f"aether {' '.join(args)}: {result}")
            self.assertIn("no orchestrator is running", result.stderr, f"aether {' '.join(args)}")
            self.assertNotIn("Fatal error", result.stderr)
        self.assertFalse(os.path.exists(self.control_socket))


if __name__ == "__main__":
    unittest.main()
