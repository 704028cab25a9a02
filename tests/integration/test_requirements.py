"""`requirements:` (issue 17, item 1): a function's own virtualenv, built by the orchestrator's
pip at `up`/`deploy`, cached under state_dir/venvs by a hash of the requirements and the
interpreter, shared between functions with the same hash, reused at the next `up`.

Hermetic: the tests run without network (a private network namespace), so the orchestrator's pip
gets PIP_NO_INDEX=1 and PIP_FIND_LINKS=<the wheel folder scripts/test-wheels.sh fills with
idna 3.7 from PyPI; AETHER_TEST_WHEELS names another>. Without that folder the tests skip, and
fail when AETHER_REQUIRE_WHEELS=1 (scripts/test.sh sets it)."""

import glob
import os
import time
import unittest
from unittest import mock

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness

WHEELS = os.environ.get("AETHER_TEST_WHEELS") or os.path.join(harness.REPO, ".build-test", "wheels")
HAVE_WHEELS = bool(glob.glob(os.path.join(WHEELS, "idna-3.7-*.whl")))

#: Building a virtualenv (venv + ensurepip + pip install from the local wheel) takes seconds, more
#: on a busy machine.
BUILD_TIMEOUT = 120.0

HANDLER = r'''
import sys

import aetherless
import idna

INIT = idna.encode("bücher.example").decode()


@aetherless.handler
def handle(req):
    return {"idna": idna.__version__, "encoded": INIT, "prefix": sys.prefix, "version": "VERSION"}
'''


@unittest.skipUnless(
    HAVE_WHEELS or os.environ.get("AETHER_REQUIRE_WHEELS"),
    f"needs the test wheels in {WHEELS} (scripts/test-wheels.sh; scripts/test.sh runs it)",
)
class RequirementsTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.assertTrue(HAVE_WHEELS, f"no idna-3.7 wheel in {WHEELS}: run scripts/test-wheels.sh")
        # The orchestrator (a child of this process) and its pip inherit these.
        patch = mock.patch.dict(os.environ, {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELS})
        patch.start()
        self.addCleanup(patch.stop)
        timeout = mock.patch.object(harness, "READY_TIMEOUT", BUILD_TIMEOUT)
        timeout.start()
        self.addCleanup(timeout.stop)
        self.venvs = os.path.join(self.state_dir, "venvs")

    def handler(self, name="handler.py", version="v1"):
        return self.write_file(name, HANDLER.replace("VERSION", version))

    def venv_folders(self):
        return sorted(os.listdir(self.venvs)) if os.path.isdir(self.venvs) else []

    def test_imports_the_package_shares_and_reuses_the_virtualenv(self):
        self.handler()
        self.write_file("requirements.txt", "idna==3.7\n")
        # The same requirement, written differently: a comment, a blank line, CRLF, trailing blanks.
        self.write_file("other.txt", "# the same\r\n\r\nidna==3.7  \r\n")
        a = self.function("a", requirements="requirements.txt")
        b = self.function("b", requirements="other.txt")
        config = self.write_config([a, b])
        orch = self.start(config)
        answers = [self.get(fn["trigger_port"], "/") for fn in (a, b)]
        for r in answers:
            self.assertStatus(r, 200, "a handler importing idna from its virtualenv")
            self.assertEqual(r.json()["idna"], "3.7")
            self.assertEqual(r.json()["encoded"], "xn--bcher-kva.example")
        [key] = self.venv_folders()
        self.assertEqual({r.json()["prefix"] for r in answers}, {os.path.join(self.venvs, key)},
                         "both functions run in one shared virtualenv")
        log = orch.stderr()
        self.assertEqual(log.count("built its virtualenv"), 1, log)
        self.assertIn(f"{a['id']}: Successfully installed idna-3.7", log, "pip's progress, with the function id")
        self.assertIn(f"{b['id']}: reusing its virtualenv", log)
        # Handlers read it; the rest of state_dir stays closed to them.
        self.assertEqual(os.stat(self.state_dir).st_mode & 0o777, 0o711)
        self.assertEqual(os.stat(os.path.join(self.venvs, key)).st_mode & 0o777, 0o755)
        marker = os.stat(os.path.join(self.venvs, key, ".aether-venv")).st_mtime_ns

        self.aether("down")
        self.assertIsNotNone(orch.wait_exit(30))
        again = self.start(config)
        self.assertEqual(self.get(a["trigger_port"], "/").json()["prefix"], os.path.join(self.venvs, key))
        log = again.stderr()
        self.assertNotIn("built its virtualenv", log, "the second up rebuilt the virtualenv")
        self.assertNotIn("pip install", log)
        self.assertEqual(log.count("reusing its virtualenv"), 2, log)
        self.assertEqual(os.stat(os.path.join(self.venvs, key, ".aether-venv")).st_mtime_ns, marker)
        self.assertEqual(self.venv_folders(), [key])

    def test_a_bad_requirement_fails_the_deploy_and_the_running_version_answers(self):
        self.handler()
        self.write_file("requirements.txt", "idna==3.7\n")
        fn = self.function("app", requirements="requirements.txt")
        self.start(self.write_config([fn]))
        before = self.get(fn["trigger_port"], "/")
        self.assertStatus(before, 200)
        [key] = self.venv_folders()

        self.write_file("bad.txt", "idna==3.7\nno-such-package-aetherless==9.9\n")
        self.handler("handler.py", version="v2")
        bad = self.write_config([dict(fn, requirements="bad.txt")], name="bad.yaml")
        result = self.aether("deploy", bad, check=False, timeout=BUILD_TIMEOUT)
        self.assertEqual(result.returncode, 1, result)
        output = result.stdout + result.stderr
        self.assertIn("No matching distribution found for no-such-package-aetherless==9.9", output)
        self.assertIn("nothing was applied", output)
        self.assertIn(fn["id"], output)
        # The build's progress reached the deploy client as it went, line by line on stderr.
        self.assertIn(f"aether deploy: starting {fn['id']}", result.stderr)
        self.assertIn(f"aether deploy: {fn['id']}: building its virtualenv from {self.tmp}/bad.txt", result.stderr)
        self.assertIn(f"aether deploy: {fn['id']}: ", result.stderr.split("building its virtualenv")[1])
        r = self.get(fn["trigger_port"], "/")
        self.assertStatus(r, 200, "the running version after the failed deploy")
        self.assertEqual(r.json()["version"], "v1")
        self.assertEqual(self.venv_folders(), [key], "the failed build left nothing behind")
        with open(os.path.join(self.state_dir, "desired.yaml")) as f:
            self.assertIn(f"requirements: \"{os.path.join(self.tmp, 'requirements.txt')}\"", f.read())

        # Changed requirements alone replace the function (its handler digest includes them).
        self.write_file("requirements.txt", "idna==3.7\n# now with a comment\n")
        result = self.aether("deploy", self.write_config([fn], name="good.yaml"), timeout=BUILD_TIMEOUT)
        self.assertIn("replaced", result.stdout)
        self.assertEqual(self.get(fn["trigger_port"], "/").json()["version"], "v2")

    def test_a_snapshot_function_with_requirements_restores(self):
        self.handler()
        self.write_file("requirements.txt", "idna==3.7\n")
        fn = self.function("snap", requirements="requirements.txt", snapshot=True, min_warm=0, max_instances=2)
        self.start(self.write_config([fn], orchestrator={"restore_timeout_ms": 100}))
        r = self.get(fn["trigger_port"], "/")
        self.assertStatus(r, 200, "a restored copy of the template that imported idna")
        self.assertEqual(r.headers.get("x-aether-cold-start"), "restore", r)
        self.assertEqual((r.json()["idna"], r.json()["encoded"]), ("3.7", "xn--bcher-kva.example"))
        self.assertTrue(r.json()["prefix"].startswith(self.venvs + "/"), r.json())
        self.assertEqual(self.stats(fn["id"])["stats"]["restores"], 1)

    def test_up_fails_naming_a_missing_requirements_file(self):
        self.handler()
        self.write_file("requirements.txt", "idna==3.7\n")
        fn = self.function("gone", requirements="requirements.txt")
        config = self.write_config([fn])
        os.unlink(os.path.join(self.tmp, "requirements.txt"))
        orch = self.start_expect_failure(config)
        self.assertIn("requirements", orch.stderr())
        self.assertIn("No such file", orch.stderr())


if __name__ == "__main__":
    unittest.main()
