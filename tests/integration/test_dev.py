"""`aether dev -c FILE`: runs like `up`, watches the configuration and every function's code,
and deploys each saved change (all or nothing); a broken edit is printed and the running
version keeps answering."""

import time
import unittest

from tests.integration.harness import AetherTestCase, Hammer

HANDLER = r'''
import aetherless
from greeting import WORD


@aetherless.handler
def handle(req):
    return {"value": VALUE, "word": WORD}


VALUE = "v1"
'''


class DevTest(AetherTestCase):
    def start_dev(self, snapshot: bool = True):
        self.write_file("greeting.py", 'WORD = "hello"\n')
        self.handler = self.write_file("handler.py", HANDLER)
        fn = self.function("dev", snapshot=snapshot)
        self.config = self.write_config([fn], orchestrator={"restore_timeout_ms": 100})
        self.orch = self.start(self.config, command="dev")
        self.port = fn["trigger_port"]
        self.fn = fn
        self.assertEqual(self.get(self.port, "/").json(), {"value": "v1", "word": "hello"})
        return fn

    def edit(self, name: str, old: str, new: str):
        path = f"{self.tmp}/{name}"
        with open(path) as f:
            text = f.read()
        self.assertIn(old, text)
        with open(path, "w") as f:
            f.write(text.replace(old, new))

    def wait_for_answer(self, expected: dict, timeout: float = 30.0) -> float:
        """Seconds until the function answers `expected`."""
        began = time.monotonic()
        while True:
            answer = self.get(self.port, "/")
            if answer.status == 200 and answer.json() == expected:
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                self.fail(f"no {expected} within {timeout} s (last: {answer!r})\n{self.orch.log()}")
            time.sleep(0.01)

    def test_an_edit_is_serving_within_a_second_and_no_request_fails(self):
        self.start_dev(snapshot=True)
        hammer = Hammer(self.port, "/", "keepalive").start()
        try:
            took = []
            for version in ("v2", "v3", "v4"):
                self.edit("handler.py", f'VALUE = "{self.previous(version)}"', f'VALUE = "{version}"')
                took.append(self.wait_for_answer({"value": version, "word": "hello"}))
        finally:
            hammer.stop()
        print(f"\naether dev, snapshot function: edit to new answer {', '.join(f'{t * 1000:.0f}' for t in took)} ms")
        # The 1 s target is measured on a quiet machine (README); here only that it is prompt.
        self.assertLess(min(took), 3.0, self.orch.log())
        statuses = {status for _, _, status, _ in hammer.results}
        self.assertEqual(statuses, {200}, f"non-200 answers while dev deployed: {hammer.results[-20:]}\n{self.orch.log()}")
        # The new generation serves as soon as the routes swap; dev reports once the old one drained.
        deadline = time.monotonic() + 30
        while self.orch.stderr().count("aether dev: deployed in") < 3:
            self.assertLess(time.monotonic(), deadline, self.orch.stderr())
            time.sleep(0.05)

    @staticmethod
    def previous(version: str) -> str:
        return f"v{int(version[1:]) - 1}"

    def test_a_syntax_error_keeps_the_old_version_answering(self):
        self.start_dev(snapshot=True)
        self.edit("handler.py", "return {", "return {{")
        deadline = time.monotonic() + 30
        while "aether dev: not deployed" not in self.orch.stderr():
            self.assertLess(time.monotonic(), deadline, self.orch.log())
            time.sleep(0.05)
        self.assertIn("SyntaxError", self.orch.stderr())
        for _ in range(5):
            self.assertEqual(self.get(self.port, "/").json(), {"value": "v1", "word": "hello"})
        # Fixed: the next save deploys.
        self.edit("handler.py", "return {{", "return {")
        self.edit("handler.py", 'VALUE = "v1"', 'VALUE = "fixed"')
        self.wait_for_answer({"value": "fixed", "word": "hello"})

    def test_an_edited_module_beside_the_handler_is_deployed(self):
        # The handler file is unchanged: dev replaces the function because its code changed.
        self.start_dev(snapshot=False)
        self.edit("greeting.py", '"hello"', '"bonjour"')
        self.wait_for_answer({"value": "v1", "word": "bonjour"})

    def test_configuration_edits_invalid_then_a_new_function(self):
        fn = self.start_dev(snapshot=False)
        with open(self.config) as f:
            good = f.read()
        with open(self.config, "w") as f:
            f.write(good.replace("trigger_port:", "trigger_prt:"))
        deadline = time.monotonic() + 30
        while "aether dev: not deployed; the running version keeps serving" not in self.orch.stderr():
            self.assertLess(time.monotonic(), deadline, self.orch.log())
            time.sleep(0.05)
        self.assertIn("trigger_prt", self.orch.stderr())
        self.assertEqual(self.get(self.port, "/").json(), {"value": "v1", "word": "hello"})
        # A second function appears in the file: it is started, the first left alone.
        second = self.function("second")
        self.write_common_handler("common.py")
        second["handler_path"] = "common.py"
        self.write_config([fn, second], orchestrator={"restore_timeout_ms": 100})
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.get(second["trigger_port"], "/json").status == 200:
                    break
            except OSError:
                pass  # not on its port yet
            self.assertLess(time.monotonic(), deadline, self.orch.log())
            time.sleep(0.05)
        deadline = time.monotonic() + 30
        while "aether dev: deployed in" not in self.orch.stderr():
            self.assertLess(time.monotonic(), deadline, self.orch.stderr())
            time.sleep(0.05)
        self.assertEqual(self.get(self.port, "/").json(), {"value": "v1", "word": "hello"})


if __name__ == "__main__":
    unittest.main()
