"""The warm pool (issue 16): copies of snapshot functions restored or forked ahead of demand,
stopped until a start takes one, within `warm_pool_size` and `warm_pool_memory_mb` across all
functions, refilled in the background, shown by `aether stats`."""

import os

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness

HANDLER = r'''
import os
import random

import aetherless

TOKEN = random.getrandbits(64)


@aetherless.handler
def handle(req):
    return {"token": TOKEN, "random": random.getrandbits(64)}
'''


def stopped_processes(uid: int) -> list[int]:
    """PIDs of processes of `uid` that are stopped (state T)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
        except OSError:
            continue
        if status.get("Uid", "").split()[:1] == [str(uid)] and status.get("State", "").startswith("T"):
            found.append(int(name))
    return found


def eventfds(pid: int) -> int:
    """How many eventfds `pid` holds: each response reader holds two (its bell, and the event
    loop's copy of it), beside the event loops' own."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[eventfd]"
        except OSError:
            continue
    return count


class WarmPoolTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_file("snap.py", HANDLER)

    def pool(self) -> dict:
        return self.status()["warm_pool"]

    def test_copies_wait_stopped_and_a_start_takes_one(self):
        criu = self.function("pooled-criu", "snap.py", snapshot="criu", min_warm=0)
        fork = self.function("pooled-fork", "snap.py", snapshot="fork", min_warm=0)
        self.start(self.write_config([criu, fork], orchestrator={"warm_pool_size": 3, "restore_timeout_ms": 100}))
        full = harness.wait_until(lambda: self.pool()["copies"] == 3, 15)
        self.assertTrue(full, self.pool())
        pool = self.pool()
        self.assertEqual(pool["capacity"], 3)
        self.assertEqual(sum(pool["functions"].values()), 3)
        self.assertLessEqual(max(pool["functions"].values()), 2, "at most 2 per function")
        self.assertEqual(pool["reserved_bytes"], 3 * 128 * 1048576, "each counted at its memory limit")
        # They wait stopped, as their function's own user.
        for fn in (criu, fork):
            uid = self.stats(fn["id"])["confinement"]["uid"]
            waiting = pool["functions"].get(fn["id"], 0)
            self.assertEqual(len(stopped_processes(uid)), waiting, fn["id"])
        # A start takes a waiting copy: only its ATTACH is written.
        for fn, kind in ((criu, "restore"), (fork, "fork")):
            r = self.get(fn["trigger_port"], "/")
            self.assertStatus(r, 200, fn["id"])
            self.assertEqual(r.headers.get("x-aether-cold-start"), kind)
            self.assertLess(float(r.headers["x-aether-restore-ms"]), 5.0, "a pooled copy starts at once")
        # The pool fills again, never past its size.
        self.assertTrue(harness.wait_until(lambda: self.pool()["copies"] == 3, 15), self.pool())
        self.assertIn("Warm pool: 3 of 3 copies waiting", self.aether("stats").stdout)

    def test_a_waiting_copys_response_reader_ends_with_it(self):
        # Each waiting copy has its response reader (its bell watched) already, so a start makes
        # none; one whose copy is dropped must end, or every refill would leave descriptors behind.
        criu = self.function("readers-criu", "snap.py", snapshot="criu", min_warm=0, idle_timeout_ms=300)
        fork = self.function("readers-fork", "snap.py", snapshot="fork", min_warm=0, idle_timeout_ms=300)
        orch = self.start(self.write_config([criu, fork], orchestrator={"warm_pool_size": 4, "restore_timeout_ms": 100}))
        self.assertTrue(harness.wait_until(lambda: self.pool()["copies"] == 4, 15), self.pool())
        full = eventfds(orch.pid)
        # Starts take two copies: their readers serve the instances; two refills add two more.
        for fn in (criu, fork):
            for _ in range(3):
                self.assertStatus(self.get(fn["trigger_port"], "/"), 200, fn["id"])
        self.assertTrue(harness.wait_until(lambda: self.pool()["copies"] == 4, 15), self.pool())
        self.assertTrue(harness.wait_until(lambda: eventfds(orch.pid) == full + 4, 5), (eventfds(orch.pid), full))
        # Once both instances stopped idle, their readers ended with them.
        self.assertTrue(harness.wait_until(
            lambda: all(self.instances(fn["id"]) == [] for fn in (criu, fork)), 10))
        self.assertTrue(harness.wait_until(lambda: eventfds(orch.pid) == full, 5), (eventfds(orch.pid), full))
        # Removing a function drops its waiting copies, and their readers.
        self.aether("rm", fork["id"])
        self.assertTrue(harness.wait_until(lambda: self.pool()["functions"].get(fork["id"], 0) == 0, 10))
        self.assertTrue(harness.wait_until(lambda: eventfds(orch.pid) == full - 4, 5), (eventfds(orch.pid), full))

    def test_the_memory_budget_bounds_the_pool(self):
        fn = self.function("budget", "snap.py", snapshot="criu", min_warm=0, memory_limit_mb=100)
        self.start(self.write_config([fn], orchestrator={"warm_pool_memory_mb": 150, "restore_timeout_ms": 100}))
        self.assertTrue(harness.wait_until(lambda: self.pool()["copies"] == 1, 15), self.pool())
        # A second 100 MiB copy would pass the 150 MiB budget: it never comes.
        self.assertFalse(harness.wait_until(lambda: self.pool()["copies"] > 1, 2), self.pool())
        self.assertEqual(self.pool()["memory_budget_bytes"], 150 * 1048576)

    def test_no_pool_restores_on_demand(self):
        fn = self.function("nopool", "snap.py", snapshot="criu", min_warm=0)
        self.start(self.write_config([fn], orchestrator={"warm_pool_size": 0, "restore_timeout_ms": 100}))
        self.assertEqual(self.pool()["copies"], 0)
        r = self.get(fn["trigger_port"], "/")
        self.assertStatus(r, 200, "restored on demand")
        self.assertEqual(r.headers.get("x-aether-cold-start"), "restore")
