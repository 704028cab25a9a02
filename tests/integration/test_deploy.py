"""Hot deploys into a running orchestrator."""

import json
import time
import unittest

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness


class DeployTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_common_handler()

    def deploy(self, *args, check=True):
        # A deploy normally takes a second or two (one handler start).
        return self.aether("deploy", *args, check=check, timeout=15)

    def pids(self) -> dict:
        return {f["id"]: sorted(i["pid"] for i in f["instances"]) for f in self.status()["functions"]}

    def deploy_rows(self, stdout: str) -> dict:
        lines = stdout.strip().splitlines()
        self.assertEqual(lines[0].split(), ["FUNCTION", "RESULT"], stdout)
        return {line.split()[0]: line.split()[1] for line in lines[1:]}

    def test_add_function(self):
        a = self.function("olda")
        self.start(self.write_config([a]))
        before = self.get(a["trigger_port"], "/json").json()
        b = self.function("newb")
        result = self.deploy(self.write_config([a, b], name="v2.yaml"))
        self.assertEqual(self.deploy_rows(result.stdout), {a["id"]: "unchanged", b["id"]: "added"})
        r = self.get(b["trigger_port"], "/json")
        self.assertStatus(r, 200, "new function")
        self.assertEqual(r.json()["function"], b["id"])
        r = self.get(a["trigger_port"], "/json")
        self.assertStatus(r, 200, "old function")
        self.assertEqual(r.json()["token"], before["token"], "the unchanged function was restarted")
        self.assertEqual(set(self.pids()), {a["id"], b["id"]})

    def test_replace_under_load_zero_errors(self):
        fn = self.function("hot", environment={"VALUE": "v1"}, max_instances=2, concurrency=2)
        self.start(self.write_config([fn]))
        port = fn["trigger_port"]
        old_pids = self.pids()[fn["id"]]
        hammers = [harness.Hammer(port, "/env", "keepalive").start(), harness.Hammer(port, "/env", "fresh").start()]
        try:
            ok = harness.wait_until(lambda: all(len(h.results) >= 20 for h in hammers), 10.0)
            self.assertTrue(ok, "load threads made no progress")
            fn2 = dict(fn, environment={"VALUE": "v2"})
            began = time.monotonic()
            result = self.deploy(self.write_config([fn2], name="v2.yaml"))
            deployed = time.monotonic()
            self.assertEqual(self.deploy_rows(result.stdout), {fn["id"]: "replaced"})
            # Keep the load on for a while after the deploy returned.
            after = lambda: all(sum(1 for r in h.results if r[0] > deployed) >= 20 for h in hammers)  # noqa: E731
            self.assertTrue(harness.wait_until(after, 10.0), "load threads stalled after the deploy")
        finally:
            for h in hammers:
                h.stop()
        for h in hammers:
            bad = [r for r in h.results if r[2] != 200]
            self.assertEqual(bad, [], f"{h.mode}: non-200 answers during the deploy ({len(h.results)} requests)"
                             + self.logs_of())
            values = [r[3] for r in h.results]
            self.assertEqual(values[0], "v1", h.mode)
            self.assertEqual(values[-1], "v2", h.mode)
            self.assertEqual(set(values), {"v1", "v2"}, h.mode)
            switch = values.index("v2")
            self.assertTrue(all(v == "v2" for v in values[switch:]), f"{h.mode}: went back to v1: {values}")
            late = [r for r in h.results if r[0] > deployed and r[3] != "v2"]
            self.assertEqual(late, [], f"{h.mode}: old version answered after the deploy returned")
            during = [r for r in h.results if began <= r[0] <= deployed]
            self.assertTrue(during, f"{h.mode}: no requests were sent during the deploy")
        self.assertEqual(hammers[0].reconnects, 0, "the keep-alive connection had to reconnect")
        new_pids = self.pids()[fn["id"]]
        self.assertFalse(set(new_pids) & set(old_pids), f"old instances still listed: {old_pids} -> {new_pids}")

    def test_invalid_file_changes_nothing(self):
        a = self.function("stay")
        self.start(self.write_config([a]))
        before = self.status()["functions"]
        bad = self.write_file(
            "bad.yaml",
            harness.render_config(
                [dict(a, timeout_ms="slow"), {"id": "Bad Id", "trigger_port": 70000, "handler_path": "handler.py"}],
                {"control_socket": self.control_socket},
            ),
        )
        result = self.deploy(bad, check=False)
        self.assertEqual(result.returncode, 1, result)
        err_lines = [line for line in result.stderr.splitlines() if line.startswith(bad + ":")]
        self.assertGreaterEqual(len(err_lines), 3, result.stderr)
        self.assertTrue(any(": error: functions[0].timeout_ms" in line for line in err_lines), result.stderr)
        self.assertTrue(any("functions[1].id" in line for line in err_lines), result.stderr)
        self.assertTrue(any("functions[1].trigger_port" in line for line in err_lines), result.stderr)
        self.assertIn("nothing was started", result.stderr)
        after = self.status()["functions"]
        self.assertEqual(
            [(f["id"], f["port"], [i["pid"] for i in f["instances"]]) for f in after],
            [(f["id"], f["port"], [i["pid"] for i in f["instances"]]) for f in before],
        )
        self.assertStatus(self.get(a["trigger_port"], "/json"), 200, "after the refused deploy")

    def test_port_taken_by_other_function(self):
        a = self.function("owner")
        self.start(self.write_config([a]))
        before = self.pids()
        b = self.function("thief", trigger_port=a["trigger_port"])
        result = self.deploy(self.write_config([b], name="thief.yaml"), check=False)
        self.assertEqual(result.returncode, 1, result)
        self.assertIn("serving", result.stderr)
        self.assertIn(a["id"], result.stderr)
        self.assertEqual(self.pids(), before)
        r = self.get(a["trigger_port"], "/json")
        self.assertStatus(r, 200, "owner after the refused deploy")
        self.assertEqual(r.json()["function"], a["id"])

    def test_force_replaces_unchanged(self):
        a = self.function("force")
        config = self.write_config([a])
        self.start(config)
        [old_pid] = self.pids()[a["id"]]
        result = self.deploy(config)
        self.assertEqual(self.deploy_rows(result.stdout), {a["id"]: "unchanged"})
        self.assertEqual(self.pids()[a["id"]], [old_pid])
        result = self.deploy(config, "--force")
        self.assertEqual(self.deploy_rows(result.stdout), {a["id"]: "replaced"})
        [new_pid] = self.pids()[a["id"]]
        self.assertNotEqual(new_pid, old_pid)
        r = self.get(a["trigger_port"], "/json")
        self.assertStatus(r, 200, "after --force")
        self.assertEqual(harness.instance_pid(r.json()), new_pid, r.json())
        status = json.loads(self.aether("stats", a["id"], "--json").stdout)
        self.assertEqual(status["state"], "running")


if __name__ == "__main__":
    unittest.main()
