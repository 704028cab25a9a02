"""Requests pipelined into an instance (issue 15): with every instance the function may run
already busy, an sdk instance holds a few requests in its ring beyond its `concurrency`, so it
takes the next one without sleeping. If it dies, the one it was executing is answered 502 and
the ones it never read are served by another instance: none lost, none executed twice."""

import concurrent.futures
import json
import os
import signal

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness

HANDLER = r'''
import sys
import time

import aetherless


@aetherless.handler
def handle(req):
    number = req.query["n"]
    print(f"EXEC {number}", flush=True)
    time.sleep(float(req.query.get("s", "0")))
    return {"n": number}
'''


class PrefetchTest(harness.AetherTestCase):
    def test_an_instance_killed_with_requests_in_its_ring_loses_none_and_runs_none_twice(self):
        self.write_file("work.py", HANDLER)
        fn = self.function("pipe", "work.py", max_instances=1, min_warm=1, timeout_ms=30000)
        self.start(self.write_config([fn]))
        port = fn["trigger_port"]

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            # 1 runs for a long time; 2..5 arrive while it runs and wait in its ring.
            first = pool.submit(self.get, port, "/?n=1&s=30", timeout=60)
            self.assertTrue(harness.wait_until(lambda: "EXEC 1" in self.logs(fn["id"]), 10.0), self.logs(fn["id"]))
            rest = {n: pool.submit(self.get, port, f"/?n={n}", timeout=60) for n in range(2, 6)}

            def pipelined():
                [instance] = self.instances(fn["id"])
                return instance if instance["in_flight"] == 5 else None

            instance = harness.wait_until(pipelined, 10.0)
            self.assertIsNotNone(instance, f"2..5 were not handed to the busy instance: {self.instances(fn['id'])}")
            os.kill(instance["pid"], signal.SIGKILL)

            answer = first.result()
            self.assertEqual(answer.status, 502, answer)
            for n, future in rest.items():
                response = future.result()
                self.assertStatus(response, 200, f"request {n}, never read by the killed instance")
                self.assertEqual(response.json(), {"n": str(n)})

        executed = [line.split()[-1] for line in self.logs(fn["id"]).splitlines() if "EXEC " in line]
        self.assertEqual(sorted(executed), ["1", "2", "3", "4", "5"], f"each request executed once: {executed}")

    def logs(self, function_id: str) -> str:
        return self.aether("logs", function_id, "-n", "200").stdout
