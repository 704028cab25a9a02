"""Versions and rollback: every deploy that changes a function is a numbered version
(`aether versions ID`), and `aether rollback ID [--to N]` runs an earlier one again, swapped in
beside the running generation, from its kept code copy when the files on disk changed since."""

import json
import os
import time
import unittest

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness


def versioned_handler(value: str) -> str:
    """A handler answering {"value": VALUE} from its own code (not from its configuration)."""
    return (
        "import random\n"
        "import aetherless\n"
        f"VALUE = {value!r}\n"
        "TOKEN = random.getrandbits(64)\n"
        "@aetherless.handler\n"
        "def handle(req):\n"
        "    return {'value': VALUE, 'token': TOKEN, 'helper': helper.NAME}\n"
        "import helper\n"
    )


class VersionsTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_file("helper.py", "NAME = 'helper-1'\n")

    def write_version(self, value: str):
        self.write_file("app.py", versioned_handler(value))

    def versions(self, fid: str) -> dict:
        return json.loads(self.aether("versions", fid, "--json").stdout)

    def value(self, port: int) -> str:
        r = self.get(port, "/")
        self.assertStatus(r, 200, "function")
        return r.json()["value"]

    def test_rollback_under_load_answers_only_200_and_runs_the_old_code(self):
        self.write_version("v1")
        fn = self.function("ver", "app.py", max_instances=2, concurrency=2)
        config = self.write_config([fn])
        self.start(config)
        port = fn["trigger_port"]
        self.assertEqual(self.value(port), "v1")
        first = self.versions(fn["id"])
        self.assertEqual([v["number"] for v in first["versions"]], [1], first)
        self.assertEqual(first["current"], 1)
        self.assertEqual(first["versions"][0]["change"], f"aether up -c {config}")

        # A deploy notices the changed handler file (the YAML is the same).
        self.write_version("v2")
        self.write_file("helper.py", "NAME = 'helper-2'\n")
        result = self.aether("deploy", config, timeout=30)
        self.assertIn("replaced", result.stdout)
        self.assertEqual(self.get(port, "/").json()["helper"], "helper-2")
        second = self.versions(fn["id"])
        self.assertEqual([v["number"] for v in second["versions"]], [1, 2], second)
        self.assertEqual(second["current"], 2)
        self.assertNotEqual(second["versions"][0]["code"], second["versions"][1]["code"])

        table = self.aether("versions", fn["id"]).stdout.splitlines()
        self.assertEqual(table[0].split(), ["VERSION", "DEPLOYED", "CODE", "CHANGE"], table)
        self.assertTrue(table[-1].lstrip().startswith("* 2"), table)

        hammers = [harness.Hammer(port, "/", "keepalive").start(), harness.Hammer(port, "/", "fresh").start()]
        try:
            self.assertTrue(harness.wait_until(lambda: all(len(h.results) >= 20 for h in hammers), 10.0))
            # The files on disk are v2: version 1 runs from its kept copy (helper module too).
            result = self.aether("rollback", fn["id"], timeout=30)
            done = time.monotonic()
            self.assertEqual(result.stdout.strip(), f"rolled back {fn['id']} to version 1 (now version 3)")
            after = lambda: all(sum(1 for r in h.results if r[0] > done) >= 20 for h in hammers)  # noqa: E731
            self.assertTrue(harness.wait_until(after, 10.0), "load stalled after the rollback")
        finally:
            for h in hammers:
                h.stop()
        for h in hammers:
            bad = [r for r in h.results if r[2] != 200]
            self.assertEqual(bad, [], f"{h.mode}: non-200 answers during the rollback" + self.logs_of())
            late = [r for r in h.results if r[0] > done and r[3] != "v1"]
            self.assertEqual(late, [], f"{h.mode}: not version 1 after the rollback returned")
        self.assertEqual(self.get(port, "/").json()["helper"], "helper-1", "the module beside it rolled back too")
        third = self.versions(fn["id"])
        self.assertEqual([v["number"] for v in third["versions"]], [1, 2, 3])
        self.assertEqual(third["current"], 3)
        self.assertEqual(third["versions"][2]["change"], f"aether rollback {fn['id']} --to 1")
        self.assertEqual(third["versions"][2]["code"], third["versions"][0]["code"])
        # The files the user edited are untouched.
        with open(os.path.join(self.tmp, "app.py")) as f:
            self.assertIn("'v2'", f.read())

        # Forward again: version 2's code is what is on disk, so it runs from there.
        result = self.aether("rollback", fn["id"], "--to", "2", timeout=30)
        self.assertEqual(result.stdout.strip(), f"rolled back {fn['id']} to version 2 (now version 4)")
        self.assertEqual(self.value(port), "v2")
        self.assertEqual(self.stats(fn["id"])["handler"], os.path.join(self.tmp, "app.py"))

    def test_deploy_notices_a_changed_module_beside_an_unchanged_handler(self):
        self.write_version("v1")
        fn = self.function("ver", "app.py")
        config = self.write_config([fn])
        self.start(config)
        self.assertEqual(self.get(fn["trigger_port"], "/").json()["helper"], "helper-1")
        result = self.aether("deploy", config, timeout=30)
        self.assertIn("unchanged", result.stdout)
        self.write_file("helper.py", "NAME = 'helper-2'\n")
        result = self.aether("deploy", config, timeout=30)
        self.assertIn("replaced", result.stdout)
        self.assertEqual(self.get(fn["trigger_port"], "/").json()["helper"], "helper-2")
        self.assertEqual([v["number"] for v in self.versions(fn["id"])["versions"]], [1, 2])

    def test_unknown_versions_and_functions_are_errors_that_change_nothing(self):
        self.write_version("v1")
        fn = self.function("ver", "app.py")
        config = self.write_config([fn])
        self.start(config)
        port = fn["trigger_port"]
        pids = [i["pid"] for i in self.instances(fn["id"])]
        result = self.aether("rollback", fn["id"], check=False)
        self.assertEqual(result.returncode, 1, result)
        self.assertIn(f"function {fn['id']} has no version before version 1, the one it runs", result.stderr)
        result = self.aether("rollback", fn["id"], "--to", "7", check=False)
        self.assertEqual(result.returncode, 1, result)
        self.assertIn(f"function {fn['id']} has no version 7 (kept: 1)", result.stderr)
        for command in (["versions", "nosuch"], ["rollback", "nosuch"]):
            result = self.aether(*command, check=False)
            self.assertEqual(result.returncode, 1, result)
            self.assertIn("no function nosuch is deployed", result.stderr)
        self.assertEqual([i["pid"] for i in self.instances(fn["id"])], pids, "an instance was replaced")
        self.assertEqual(self.value(port), "v1")
        # Rolling back to the version it runs changes nothing and says so.
        result = self.aether("rollback", fn["id"], "--to", "1")
        self.assertIn("already runs version 1", result.stdout)
        self.assertEqual([v["number"] for v in self.versions(fn["id"])["versions"]], [1])

    def test_keep_versions_keeps_the_newest(self):
        self.write_version("v1")
        fn = self.function("ver", "app.py")
        config = self.write_config([fn], orchestrator={"keep_versions": 2})
        self.start(config)
        for value in ("v2", "v3", "v4"):
            self.write_version(value)
            self.aether("deploy", config, timeout=30)
        self.assertEqual(self.value(fn["trigger_port"]), "v4")
        document = self.versions(fn["id"])
        self.assertEqual([v["number"] for v in document["versions"]], [3, 4], document)
        self.assertEqual(document["keep"], 2)
        code = os.path.join(self.state_dir, "versions", fn["id"], "code")
        self.assertEqual(len(os.listdir(code)), 2, "code copies of forgotten versions are removed")
        result = self.aether("rollback", fn["id"], "--to", "1", check=False)
        self.assertEqual(result.returncode, 1, result)
        self.assertIn("has no version 1 (kept: 3, 4)", result.stderr)
        self.aether("rollback", fn["id"])
        self.assertEqual(self.value(fn["trigger_port"]), "v3")
        # `aether rm` forgets its versions.
        self.aether("rm", fn["id"])
        self.assertFalse(os.path.exists(os.path.join(self.state_dir, "versions", fn["id"])))

    def test_a_rollback_is_what_up_resumes(self):
        self.write_version("v1")
        fn = self.function("ver", "app.py")
        config = self.write_config([fn])
        orch = self.start(config)
        self.write_version("v2")
        self.aether("deploy", config, timeout=30)
        self.aether("rollback", fn["id"], timeout=30)
        self.assertEqual(self.value(fn["trigger_port"]), "v1")
        self.aether("down")
        self.assertEqual(orch.wait_exit(15), 0, orch.log())
        # `aether up` without a file resumes the rolled-back version (its code copy) and records
        # no new version; the files on disk still say v2.
        orch = self.start(None, "--state-dir", self.state_dir)
        self.assertEqual(self.value(fn["trigger_port"]), "v1", orch.log())
        self.assertEqual([v["number"] for v in self.versions(fn["id"])["versions"]], [1, 2, 3])

    def test_a_snapshot_rollback_restores_the_kept_image_without_init(self):
        self.write_version("v1")
        fn = self.function(
            "snapver", "app.py", snapshot=True, min_warm=0, max_instances=2, environment={"GEN": "a"})
        config = self.write_config([fn], orchestrator={"restore_timeout_ms": 100})
        orch = self.start(config)
        token = self.get(fn["trigger_port"], "/").json()["token"]
        # A configuration change (same code): a new image with its own init.
        changed = dict(fn, environment={"GEN": "b"})
        self.aether("deploy", self.write_config([changed], name="b.yaml"), timeout=30)
        self.assertNotEqual(self.get(fn["trigger_port"], "/").json()["token"], token)
        kept = orch.stderr().count("snapshot taken from the kept image (no init ran)")
        self.aether("rollback", fn["id"], timeout=30)
        self.assertEqual(
            orch.stderr().count("snapshot taken from the kept image (no init ran)"), kept + 1, orch.log())
        r = self.get(fn["trigger_port"], "/")
        self.assertStatus(r, 200, "after the rollback")
        self.assertEqual(r.json()["token"], token, "version 1's init state, from its image")


if __name__ == "__main__":
    unittest.main()
