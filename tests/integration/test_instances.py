"""How instances are kept: threads per instance, the derived lifecycle state, start-up errors."""

import os

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


class InstancesTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_common_handler()

    def serving_threads(self, instances: int) -> int:
        """Threads of an orchestrator whose one function has `instances` serving instances."""
        fn = self.function(f"thr{instances}", max_instances=instances, min_warm=instances)
        socket = os.path.join(self.tmp, f"thr{instances}.sock")
        config = self.write_config([fn], name=f"thr{instances}.yaml", orchestrator={"control_socket": socket})
        self.control_socket = socket
        orch = self.start(config)
        all_serving = harness.wait_until(
            lambda: [i["phase"] for i in self.instances(fn["id"])] == ["serving"] * instances, 10.0)
        self.assertTrue(all_serving, self.instances(fn["id"]))
        for _ in range(instances * 4):
            self.assertStatus(self.get(fn["trigger_port"], "/json"), 200, "request")
        threads = thread_count(orch.pid)
        self.aether("down")
        self.assertEqual(orch.wait_exit(15), 0, orch.log())
        return threads

    def test_eight_instances_cost_no_more_threads_than_one(self):
        # Reaping (one pidfd/epoll thread), handler output and response rings (read on the event
        # loops) cost no thread per instance. (One more is allowed for a short-lived start.)
        one = self.serving_threads(1)
        eight = self.serving_threads(8)
        self.assertLessEqual(eight - one, 1, f"1 instance: {one} threads, 8 instances: {eight}")

    def test_spawned_function_scaled_to_zero_is_suspended(self):
        fn = self.function("susp", min_warm=0, idle_timeout_ms=300)
        self.start(self.write_config([fn]))
        self.assertEqual(self.stats(fn["id"])["lifecycle"], "Running", "its first instance proves it starts")
        gone = harness.wait_until(lambda: self.instances(fn["id"]) == [], 5.0)
        self.assertTrue(gone, f"idle instance not stopped: {self.instances(fn['id'])}")
        self.assertEqual(self.stats(fn["id"])["lifecycle"], "Suspended", "no snapshot: the next one is spawned")
        rows = {line.split()[0]: line.split() for line in self.aether("list").stdout.splitlines()[1:]}
        self.assertEqual(rows[fn["id"]][4], "Suspended", rows)
        again = self.get(fn["trigger_port"], "/json")
        self.assertStatus(again, 200, "after scale to zero")
        self.assertEqual(again.headers.get("x-aether-cold-start"), "spawn", again)
        self.assertEqual(self.stats(fn["id"])["lifecycle"], "Running")

    def test_snapshot_dir_that_cannot_be_created_fails_up_naming_it(self):
        blocker = self.write_file("not-a-folder", "")
        fn = self.function("snapdir")
        orch = self.start_expect_failure(
            self.write_config([fn], orchestrator={"snapshot_dir": os.path.join(blocker, "images")}))
        errors = [line for line in orch.stderr().splitlines() if line.startswith("aether up:")]
        self.assertTrue(
            any("snapshot_dir" in line and blocker in line and "Not a directory" in line for line in errors),
            orch.log())
        self.assertFalse(any("control socket" in line for line in errors), errors)
