"""`aether top`: the live view in a real terminal (tmux: send-keys, capture-pane), and its plain
lines when stdout is not a terminal."""

import os
import re
import shutil
import subprocess
import time
import unittest

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness


class TopPlainTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.write_common_handler()

    def test_plain_lines_when_not_a_terminal(self):
        a = self.function("plain")
        b = self.function("other")
        self.start(self.write_config([a, b]))
        hammer = harness.Hammer(a["trigger_port"], "/json", "keepalive").start()
        try:
            result = self.aether("top", "--interval", "0.5", "--count", "4", timeout=30)
        finally:
            hammer.stop()
        lines = result.stdout.strip().splitlines()
        self.assertEqual(len(lines), 8, result.stdout)  # two functions, four refreshes
        fields = [dict(f.split("=", 1) for f in line.split()[1:]) for line in lines]
        self.assertEqual({f["function"] for f in fields}, {a["id"], b["id"]})
        for line in lines:
            self.assertRegex(line, r"^\d\d:\d\d:\d\d function=")
        mine = [f for f in fields if f["function"] == a["id"]]
        self.assertEqual(mine[0]["req_s"], "-", "no rate before a second document")
        rates = [float(f["req_s"]) for f in mine[1:]]
        self.assertTrue(all(r > 0 for r in rates), rates)
        invocations = [int(f["invocations"]) for f in mine]
        self.assertEqual(invocations, sorted(invocations))
        self.assertGreater(invocations[-1], invocations[0], "the counts moved under load")
        self.assertEqual(int(mine[-1]["busy"]) + int(mine[-1]["idle"]), 1, "one client: one serving instance")
        self.assertEqual(mine[-1]["starts"], "spawn:1")
        self.assertNotEqual(mine[-1]["steered"], "-", "eBPF counters of the trigger port")
        idle = [f for f in fields if f["function"] == b["id"]]
        self.assertTrue(all(f["req_s"] in ("-", "0.0") for f in idle), idle)

    def test_errors(self):
        r = self.aether("top", "--interval", "0", check=False)
        self.assertEqual(r.returncode, 64, r)
        self.assertIn("--interval must be between 0.1 and 3600 seconds", r.stderr)
        r = self.aether("top", "--count", "0", check=False)
        self.assertEqual(r.returncode, 64, r)
        self.assertIn("--count must be at least 1", r.stderr)
        # No orchestrator on the socket: one line, exit 1.
        r = self.aether("top", "--count", "1", check=False)
        self.assertEqual(r.returncode, 1, r)
        self.assertTrue(r.stderr.startswith("aether top: "), r.stderr)
        self.assertEqual(r.stdout, "")


# Under scripts/test.sh (which names the test virtualenv and installs tmux) a missing tmux fails.
@unittest.skipUnless(
    shutil.which("tmux") or os.environ.get("AETHER_TEST_VENV_PYTHON"),
    "needs tmux (scripts/setup.sh --deps-only installs it)")
class TopTerminalTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.assertIsNotNone(shutil.which("tmux"), "tmux is not installed (scripts/setup.sh --deps-only)")
        self.write_common_handler()
        self.session = f"aether-top-{os.getpid()}-{self.test_number}"
        # A private tmux server (its socket in this test's folder).
        self.tmux_socket = os.path.join(self.tmp, "tmux.sock")
        self.addCleanup(self.tmux, "kill-server", check=False)

    def tmux(self, *args, check=True) -> str:
        result = subprocess.run(
            ["tmux", "-S", self.tmux_socket, *args], capture_output=True, text=True, timeout=10)
        if check:
            self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def pane(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def wait_pane(self, predicate, what: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.pane()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                self.fail(f"the pane never showed {what}:\n{text}")
            time.sleep(0.1)

    def invocations(self, text: str, function_id: str) -> tuple[str, ...]:
        row = next(line for line in text.splitlines() if function_id in line)
        return tuple(row.split())

    def test_live_view_keys_and_quit(self):
        a = self.function("alpha", max_instances=2)
        b = self.function("beta")
        self.start(self.write_config([a, b]))
        command = f"{harness.aether_bin()} top --interval 0.3 --socket {self.control_socket}; echo TOP-EXITED $?; sleep 30"
        self.tmux("new-session", "-d", "-s", self.session, "-x", "200", "-y", "40", command)
        text = self.wait_pane(lambda t: a["id"] in t and b["id"] in t, "both functions")
        self.assertIn("REQ/S", text)
        self.assertIn("FUNCTION*", text, "sorted by name at first")

        # Under load the request figures move between two captures.
        hammers = [harness.Hammer(a["trigger_port"], "/json", "keepalive").start() for _ in range(2)]
        try:
            first = self.wait_pane(
                lambda t: re.search(rf"{re.escape(a['id'])}\s+Running\s+\d+\s+\d+\s+\d+\s+\d+\.\d", t) is not None,
                "a request rate")
            time.sleep(1.0)
            second = self.pane()
        finally:
            for h in hammers:
                h.stop()
        self.assertNotEqual(self.invocations(first, a["id"]), self.invocations(second, a["id"]),
                            f"numbers did not move:\n{first}\n{second}")
        parts = self.invocations(second, a["id"])
        rate = float(parts[parts.index(a["id"]) + 5])
        self.assertGreater(rate, 0, second)

        # `2` sorts by req/s (alpha first), `1` by name again.
        self.tmux("send-keys", "-t", self.session, "2")
        text = self.wait_pane(lambda t: "REQ/S*" in t, "the req/s sort")
        rows = [line for line in text.splitlines() if a["id"] in line or b["id"] in line]
        self.assertIn(a["id"], rows[0], text)
        self.tmux("send-keys", "-t", self.session, "s")
        self.wait_pane(lambda t: "P99 MS*" in t, "the next sort column (p99)")
        self.tmux("send-keys", "-t", self.session, "1")
        self.wait_pane(lambda t: "FUNCTION*" in t, "the name sort")

        # Down to beta, Enter: its instances; Esc: back; then alpha's by the arrow keys.
        self.tmux("send-keys", "-t", self.session, "Down")
        self.wait_pane(lambda t: f"> {b['id']}" in t, "the cursor on beta")
        self.tmux("send-keys", "-t", self.session, "Enter")
        text = self.wait_pane(lambda t: f"function {b['id']}: instances" in t, "beta's instances")
        self.assertIn("INSTANCE", text)
        self.assertRegex(text, r"\n0\s+\d+\s+serving\s+spawn\s+")
        self.tmux("send-keys", "-t", self.session, "Escape")
        self.wait_pane(lambda t: "FUNCTION*" in t and "instances" not in t.splitlines()[0], "the functions again")
        self.tmux("send-keys", "-t", self.session, "Up")
        self.wait_pane(lambda t: f"> {a['id']}" in t, "the cursor on alpha")
        self.tmux("send-keys", "-t", self.session, "i")
        text = self.wait_pane(lambda t: f"function {a['id']}: instances" in t, "alpha's instances")
        self.assertRegex(text, r"served|SERVED")
        self.tmux("send-keys", "-t", self.session, "b")
        self.wait_pane(lambda t: "FUNCTION*" in t, "the functions again")

        # q quits and gives the terminal back (the shell line after it runs).
        self.tmux("send-keys", "-t", self.session, "q")
        text = self.wait_pane(lambda t: "TOP-EXITED 0" in t, "top exiting with status 0")
        self.assertNotIn("REQ/S", text, "the alternate screen is gone")

    def test_sigterm_restores_the_terminal(self):
        a = self.function("sig")
        self.start(self.write_config([a]))
        command = f"{harness.aether_bin()} top --socket {self.control_socket}; echo TOP-EXITED $?; stty -a; sleep 30"
        self.tmux("new-session", "-d", "-s", self.session, "-x", "200", "-y", "40", command)
        self.wait_pane(lambda t: a["id"] in t, "the function")
        pid = int(self.tmux("display-message", "-p", "-t", self.session, "#{pane_pid}").strip())
        tops = [p for p in harness._proc_pids() if self._parent(p) == pid]
        self.assertEqual(len(tops), 1, tops)
        os.kill(tops[0], 15)
        text = self.wait_pane(lambda t: "TOP-EXITED" in t and "baud" in t, "top exiting, then stty -a")
        self.assertIn("TOP-EXITED 0", text)
        # Line editing and echo are back on.
        self.assertRegex(text, r"(?<![-\w])icanon")
        self.assertRegex(text, r"(?<![-\w])echo(?![\w])")

    @staticmethod
    def _parent(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return -1


if __name__ == "__main__":
    unittest.main()
