"""`snapshot: fork` (issue 16): instances are children forked from a live, initialised template,
with the same ATTACH conversation as restored copies (real handlers, real cgroups, confined)."""

import os
import re
import signal
import threading
import time

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness

#: Init sets state every copy must share (TOKEN) and random state no two copies may share.
FORK_HANDLER = r'''
import os
import random

import aetherless

TOKEN = random.getrandbits(64)


@aetherless.handler
def handle(req):
    if req.path == "/sleep":
        import time
        time.sleep(float(req.query.get("s", "0.2")))
    if req.path == "/peek":
        # Another process's memory: a sibling copy's, or the template's (PID 1).
        try:
            with open(f"/proc/{req.query['pid']}/mem", "rb") as f:
                f.read(1)
            return {"peek": "read"}
        except OSError as e:
            return {"peek": type(e).__name__}
    if req.path == "/signal":
        # Another process, by its number in /proc (the template's PID namespace).
        try:
            os.kill(int(req.query["pid"]), 0)
            return {"signal": "sent"}
        except OSError as e:
            return {"signal": type(e).__name__}
    # Its PID in its own namespace, and in the template's (the /proc it sees is the template's).
    return {"token": TOKEN, "random": random.getrandbits(64), "pid": os.getpid(),
            "template_pid": int(os.readlink("/proc/self"))}
'''

THREAD_AT_IMPORT = r'''
import threading, time
import aetherless

threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()


@aetherless.handler
def handle(req):
    return {}
'''


class ForkTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_file("fork.py", FORK_HANDLER)

    def fork_function(self, name="fork", **extra):
        settings = {"snapshot": "fork", "min_warm": 0, "max_instances": 4, "idle_timeout_ms": 60000}
        settings.update(extra)
        return self.function(name, "fork.py", **settings)

    def template_pid(self, orchestrator, after: int = 0) -> int:
        """The PID of the newest fork template the orchestrator's log announced (after `after`)."""
        found = [int(p) for p in re.findall(r"pid=(\d+) \[AetherOrchestrator\] fork template ready", orchestrator.stderr())]
        self.assertGreater(len(found), after, orchestrator.log())
        return found[-1]

    def test_copies_share_init_state_and_reseed(self):
        fn = self.fork_function(max_queue=64)
        orch = self.start(self.write_config([fn]))
        first = self.get(fn["trigger_port"], "/")
        self.assertStatus(first, 200, "first request after scale to zero")
        self.assertEqual(first.headers.get("x-aether-cold-start"), "fork", first)
        results, lock = [], threading.Lock()

        def call():
            r = self.get(fn["trigger_port"], "/sleep?s=0.1", timeout=20)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=call) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual([r.status for r in results], [200] * 20, results)
        self.assertEqual({r.json()["token"] for r in results}, {first.json()["token"]}, "the template's init state")
        self.assertGreaterEqual(len({r.headers.get("x-aether-instance") for r in results}), 2, "several copies ran")
        self.assertEqual(len({r.json()["random"] for r in results}), 20, "copies reseeded their random state")
        # Each copy is a child of the template (PID 1 of the template's namespace) and PID 1 of a
        # PID namespace of its own, alone in its own cgroups.
        self.assertEqual({r.json()["pid"] for r in results}, {1}, "each copy has a PID namespace of its own")
        pids = {r.json()["template_pid"] for r in results}
        self.assertNotIn(1, pids)
        self.assertGreaterEqual(len(pids), 2)
        for instance in self.instances(fn["id"]):
            with open(f"/proc/{instance['pid']}/cgroup") as f:
                cgroups = f.read()
            self.assertIn(f"{fn['id']}-g1-template-f", cgroups, cgroups)
            with open(f"/proc/{instance['pid']}/status") as f:
                status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
            self.assertEqual(int(status["CapEff"], 16), 0, "a copy holds no capability")
            self.assertEqual(int(status["CapPrm"], 16), 0, "a copy holds no capability")
            self.assertEqual(int(status["CapAmb"], 16), 0, "a copy holds no capability")
        self.assertIn("instance forked", orch.stderr())
        # Copies are not dumpable: neither a sibling's memory nor the template's can be read.
        sibling = max(pids)
        for pid in (1, sibling):
            r = self.get(fn["trigger_port"], f"/peek?pid={pid}")
            self.assertEqual(r.json()["peek"], "PermissionError", f"/proc/{pid}/mem of a copy")
        # Nor can a copy signal another one: the numbers /proc shows are not in its namespace.
        for pid in sorted(pids):
            r = self.get(fn["trigger_port"], f"/signal?pid={pid}")
            self.assertEqual(r.json()["signal"], "ProcessLookupError", f"kill({pid}, 0) from a copy")

    def test_a_hundred_concurrent_requests_against_zero_instances(self):
        fn = self.fork_function(max_instances=64, max_queue=256)
        self.start(self.write_config([fn]))
        results, lock = [], threading.Lock()

        def call():
            r = self.get(fn["trigger_port"], "/sleep?s=0.05", timeout=30)
            with lock:
                results.append(r.status)

        threads = [threading.Thread(target=call) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(results, [200] * 100)

    def test_a_template_that_dies_is_started_again(self):
        fn = self.fork_function(min_warm=1)
        orch = self.start(self.write_config([fn]))
        before = self.get(fn["trigger_port"], "/").json()["token"]
        os.kill(self.template_pid(orch), signal.SIGKILL)
        # Its copies end with it; a new template (a fresh init) serves the next requests.
        noticed = harness.wait_until(lambda: "starting it again" in orch.stderr(), 15)
        self.assertTrue(noticed, orch.log())
        restarted = harness.wait_until(lambda: orch.stderr().count("fork template ready") >= 2, 15)
        self.assertTrue(restarted, orch.log())
        answer = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            answer = self.get(fn["trigger_port"], "/", timeout=10)
            if answer.status == 200:
                break
            # Meanwhile a start fails with a 503 that says why, never anything else.
            self.assertEqual(answer.status, 503, answer)
            time.sleep(0.1)
        self.assertStatus(answer, 200, "after the template was started again")
        self.assertNotEqual(answer.json()["token"], before, "a new template ran its init again")
        self.assertTrue(orch.alive())

    def test_a_thread_running_at_checkpoint_fails_up_clearly(self):
        self.write_file("threaded.py", THREAD_AT_IMPORT)
        for mode in ("fork", "criu"):
            fn = self.function(f"threaded-{mode}", "threaded.py", snapshot=mode)
            orch = self.start_expect_failure(self.write_config([fn]))
            self.assertIn("2 threads are running at CHECKPOINT", orch.stderr(), mode)
            self.assertIn("single-threaded", orch.stderr(), mode)

    def test_swift_sdk_function_forks(self):
        binary = os.path.join(os.path.dirname(harness.AETHER_BIN), "hello-swift")
        fn = self.function("swfork", binary, snapshot="fork", min_warm=0)
        self.start(self.write_config([fn]))
        r = self.get(fn["trigger_port"], "/?name=fork")
        self.assertStatus(r, 200, "forked Swift handler")
        self.assertEqual(r.headers.get("x-aether-cold-start"), "fork")
        self.assertEqual(r.json(), {"hello": "fork", "runtime": "swift"})

    def test_stop_ends_the_template_and_every_copy(self):
        fn = self.fork_function(min_warm=2)
        orch = self.start(self.write_config([fn]))
        template = self.template_pid(orch)
        copies = [i["pid"] for i in self.instances(fn["id"])]
        self.assertEqual(len(copies), 2)
        self.aether("down")
        self.assertEqual(orch.wait_exit(15), 0, orch.log())
        def gone(pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not yet reaped
            except OSError:
                return True

        for pid in [template] + copies:
            self.assertTrue(harness.wait_until(lambda: gone(pid), 5), f"pid {pid} outlived `aether down`")
