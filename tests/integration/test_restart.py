"""`aether restart`: a successor orchestrator takes over without a refused connection or a
non-2xx answer, for sdk functions and process handlers alike."""

import os
import time

try:
    from . import harness
    from .test_dataplane import PROCESS_HANDLER, in_private_network
except ImportError:  # run from inside tests/integration
    import harness
    from test_dataplane import PROCESS_HANDLER, in_private_network

import unittest


@unittest.skipUnless(in_private_network(), "needs a private network namespace (unshare -n), as scripts/test.sh runs it")
class RestartTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_common_handler()
        self.write_file("process.py", PROCESS_HANDLER.replace("PORT_EXPRESSION", 'int(os.environ["AETHER_LISTEN_PORT"])'))

    def test_restart_under_load_refuses_nothing_and_answers_everything(self):
        sdk = self.function("rsdk", environment={"VALUE": "same"})
        proc = self.function("rproc", "process.py", protocol="process", environment={"VALUE": "same"})
        old = self.start(self.write_config([sdk, proc]))
        hammers = [
            harness.Hammer(sdk["trigger_port"], "/env", "fresh").start(),
            harness.Hammer(sdk["trigger_port"], "/env", "keepalive").start(),
            harness.Hammer(proc["trigger_port"], "/", "fresh").start(),
        ]
        try:
            self.assertTrue(harness.wait_until(lambda: all(len(h.results) >= 20 for h in hammers), 10.0), "no load")
            restarted = self.aether("restart", timeout=120)
            self.assertIn(f"orchestrator {old.pid} handed over to", restarted.stdout)
            switched = time.monotonic()
            self.assertTrue(
                harness.wait_until(lambda: all(sum(1 for r in h.results if r[0] > switched) >= 20 for h in hammers), 20.0),
                "the load stalled after the restart")
            # The old orchestrator finishes what it has open and exits.
            self.assertEqual(old.wait_exit(40), 0, old.log())
        finally:
            for hammer in hammers:
                hammer.stop()
        for hammer in hammers:
            bad = [r for r in hammer.results if r[2] != 200]
            self.assertEqual(bad, [], f"{hammer.mode} load on port {hammer.port}: {len(bad)} of {len(hammer.results)} failed"
                             + self.logs_of())
        successor = self.status()
        self.assertNotEqual(successor["pid"], old.pid)
        self.assertTrue(successor["ready"])
        self.assertEqual({f["id"] for f in successor["functions"]}, {sdk["id"], proc["id"]})
        self.assertStatus(self.get(sdk["trigger_port"], "/json"), 200, "sdk after the restart")
        served_by = harness.instance_pid(self.get(proc["trigger_port"], "/").json())
        self.assertIn(served_by, [i["pid"] for f in successor["functions"] for i in f["instances"]],
                      "the process handler answering is the successor's")
        # The successor is an orchestrator like any other: `aether down` stops it.
        self.aether("down")
        self.assertTrue(harness.wait_until(lambda: not harness._pid_alive(successor["pid"]), 20.0))

    def test_restart_without_an_orchestrator_says_so(self):
        result = self.aether("restart", check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("no orchestrator is running", result.stderr)
