"""The SDK as a package: in a fresh virtualenv, `pip install ./sdk/python`, then a handler's unit
test with aetherless.testing runs from a folder outside the repository (what the README's
"Testing a handler locally" shows).

It makes a virtualenv and asks the package index for the build backend, so it runs only when
AETHER_TEST_PACKAGE=1 (scripts/test.sh sets it):

    AETHER_TEST_PACKAGE=1 python3 -m unittest discover -s sdk/python/tests -p test_package.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, SDK)

import aetherless  # noqa: E402
from aetherless import protocol  # noqa: E402

HANDLER = """
    import aetherless

    @aetherless.handler
    def handle(req):
        if req.method == "POST":
            return aetherless.Response(201, [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], {"got": req.json()})
        return {"hello": req.query.get("name", "world")}
"""

HANDLER_TEST = """
    import os
    import unittest

    import aetherless
    from aetherless import testing

    from handler import handle


    class TestHandler(unittest.TestCase):
        def test_hello(self):
            resp = testing.call(handle, "GET", "/hello?name=x")
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.json(), {"hello": "x"})

        def test_post(self):
            resp = testing.call(handle, "POST", "/", json={"a": 1})
            self.assertEqual((resp.status, resp.json()), (201, {"got": {"a": 1}}))
            self.assertEqual([v for n, v in resp.headers if n == "Set-Cookie"], ["a=1", "b=2"])

        def test_installed_not_borrowed(self):
            self.assertIn(os.sep + "site-packages" + os.sep, aetherless.__file__)


    if __name__ == "__main__":
        unittest.main()
"""


class TestVersion(unittest.TestCase):
    def test_major_version_is_the_handler_protocol_version(self):
        self.assertEqual(aetherless.__version__.split(".")[0], str(protocol.VERSION))


@unittest.skipUnless(
    os.environ.get("AETHER_TEST_PACKAGE") == "1",
    "set AETHER_TEST_PACKAGE=1: makes a virtualenv and installs the SDK with pip (needs the package index)",
)
class TestInstalledPackage(unittest.TestCase):
    def test_pip_install_then_a_handler_unit_test_outside_the_repository(self):
        with tempfile.TemporaryDirectory(prefix="aetherless-pkg-") as tmp:
            venv = os.path.join(tmp, "venv")
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
            python = os.path.join(venv, "bin", "python")
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
            pip = subprocess.run(
                [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", SDK],
                capture_output=True, text=True, env=env,
            )
            self.assertEqual(pip.returncode, 0, pip.stdout + pip.stderr)
            project = os.path.join(tmp, "project")
            os.mkdir(project)
            for name, source in (("handler.py", HANDLER), ("test_handler.py", HANDLER_TEST)):
                with open(os.path.join(project, name), "w") as f:
                    f.write(textwrap.dedent(source))
            run = subprocess.run(
                [python, "-m", "unittest", "-v", "test_handler"], cwd=project, capture_output=True, text=True, env=env
            )
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
            self.assertIn("Ran 3 tests", run.stderr)
            version = subprocess.run(
                [python, "-c", "import importlib.metadata as m, aetherless; print(m.version('aetherless'), aetherless.__version__)"],
                cwd=project, capture_output=True, text=True, env=env, check=True,
            )
            self.assertEqual(version.stdout.split(), [aetherless.__version__] * 2)


if __name__ == "__main__":
    unittest.main()
