"""The live page at `/` on the metrics port (issue 18, item 5), in a real browser: Debian's
headless Chromium loads it from `aether up` serving two functions, one of them under load.

(a) The DOM as the page's script leaves it, read over Chromium's DevTools pipe so that the page
runs in real time (`--dump-dom` only runs it in virtual time, in which a second passes between
two polls of status.json but hardly any time passes for the orchestrator, so a rate over it means
little): both functions' rows, the loaded one's request rate above zero, and its request count
growing while the same page stays open (it refreshes itself, nothing reloads it).
(b) Two `--screenshot` PNGs (separate loads, `--virtual-time-budget` for the polls): their size,
and tesseract's OCR of them for both functions' names and a request count that grew.

`GET /status.json` is the control API's status document; other paths and methods are 404.
Chromium and tesseract come from scripts/setup.sh --deps-only; without them the tests skip, and
fail when AETHER_REQUIRE_BROWSER=1 (scripts/test.sh sets it)."""

import fcntl
import html.parser
import json
import os
import re
import select
import shutil
import struct
import subprocess
import time
import unittest

try:
    from . import harness
except ImportError:  # run from inside tests/integration
    import harness

CHROMIUM = shutil.which("chromium")
TESSERACT = shutil.which("tesseract")
WIDTH, HEIGHT = 1600, 900


class Rows(html.parser.HTMLParser):
    """The page's function rows: {function id: {cell class: text}}."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.refreshes = 0
        self._row: dict[str, str] | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.refreshes = int(attrs.get("data-refreshes") or 0)
        elif tag == "tr" and "data-function" in attrs:
            self._row = self.rows.setdefault(attrs["data-function"], {})
        elif tag == "td" and self._row is not None:
            self._cell = attrs.get("class")
            self._row[self._cell] = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._row is not None and self._cell is not None:
            self._row[self._cell] += data


class LiveBrowser:
    """Headless Chromium on one page, driven over its DevTools pipe (`--remote-debugging-pipe`:
    commands in on fd 3, answers out on fd 4, each a JSON message ending in a NUL byte)."""

    def __init__(self, url: str, profile: str, cwd: str):
        to_browser, self._commands = os.pipe()
        self._answers, from_browser = os.pipe()
        # Out of the way of 3 and 4, which the child's own copies take.
        to_browser, from_browser = (self._high(fd) for fd in (to_browser, from_browser))

        def descriptors():
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", url],
            pass_fds=(3, 4), preexec_fn=descriptors, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, cwd=cwd)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._id = 0
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    @staticmethod
    def _high(fd: int) -> int:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
        return high

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                    raise TimeoutError(f"chromium did not answer {method} within {timeout} s")
                chunk = os.read(self._answers, 1 << 20)
                if not chunk:
                    raise EOFError(f"chromium closed its DevTools pipe: {self.process.stderr.read()[-3000:]!r}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:  # events and other answers are not ours
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def dom(self) -> str:
        """The page's HTML now; empty while there is none to read (evaluated during a load, the
        answer can carry an exception and no value: the caller polls again)."""
        answer = self.call("Runtime.evaluate", self.session, expression="document.documentElement.outerHTML",
                           returnByValue=True)
        return answer.get("result", {}).get("value") or ""

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except (OSError, TimeoutError, EOFError, RuntimeError):
            pass
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process.stderr.close()
        os.close(self._commands)
        os.close(self._answers)


@unittest.skipUnless(
    (CHROMIUM and TESSERACT) or os.environ.get("AETHER_REQUIRE_BROWSER"),
    "needs chromium and tesseract-ocr (scripts/setup.sh --deps-only installs them; scripts/test.sh requires them)",
)
class WebPageTest(harness.AetherTestCase):
    def setUp(self):
        super().setUp()
        self.assertIsNotNone(CHROMIUM, "chromium is not installed (scripts/setup.sh --deps-only)")
        self.assertIsNotNone(TESSERACT, "tesseract is not installed (scripts/setup.sh --deps-only)")
        self.write_common_handler()
        self.browser_runs = 0

    def profile(self) -> str:
        """A fresh Chromium profile in this test's folder (so the harness's cleanup sees any
        process a run leaves behind)."""
        self.browser_runs += 1
        return os.path.join(self.tmp, f"chromium-{self.browser_runs}")

    def live_rows(self, browser: LiveBrowser, refreshes: int) -> Rows:
        """The page's rows once its script has shown `refreshes` status documents or more."""
        deadline = time.monotonic() + 30
        while True:
            parsed = Rows()
            dom = browser.dom()
            parsed.feed(dom)
            if parsed.refreshes >= refreshes:
                return parsed
            if time.monotonic() > deadline:
                self.fail(f"the page showed {parsed.refreshes} status documents, not {refreshes}:\n{dom}")
            time.sleep(0.2)

    def screenshot(self, url: str, name: str) -> str:
        """A `--screenshot` of a fresh load, checked as a PNG of the window's size; its OCR text."""
        path = os.path.join(self.tmp, name)
        # Drawn at twice the pixels (a HiDPI screen): tesseract reads text best well above 20 px.
        # The virtual time budget lets the script poll status.json a few times first.
        command = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={self.profile()}", "--virtual-time-budget=4000", f"--window-size={WIDTH},{HEIGHT}",
            "--force-device-scale-factor=2", f"--screenshot={path}", url,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=self.tmp)
        self.assertEqual(result.returncode, 0, f"{' '.join(command)}\nstderr: {result.stderr[-3000:]}")
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG")
        self.assertEqual(data[12:16], b"IHDR")
        self.assertEqual(struct.unpack(">II", data[16:24]), (2 * WIDTH, 2 * HEIGHT), "the screenshot's size")
        # --psm 4: one column of lines, so that a table row is read as one line.
        result = subprocess.run([TESSERACT, path, "stdout", "--psm", "4"], capture_output=True, text=True,
                                timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def test_page_shows_both_functions_live_in_chromium(self):
        a = self.function("alpha")
        b = self.function("bravo")
        metrics_port = self.free_port()
        self.start(self.write_config([a, b], orchestrator={"metrics_port": metrics_port}))
        self.wait_serving(a["id"])
        self.wait_serving(b["id"])
        url = f"http://127.0.0.1:{metrics_port}/"

        # The page itself: one document, nothing to fetch from anywhere else.
        page = self.get(metrics_port, "/")
        self.assertStatus(page, 200, "GET /")
        self.assertEqual(page.headers.get("content-type"), "text/html; charset=utf-8")
        text = page.body.decode()
        for external in ("http://", "https://", "src=", "<link"):
            self.assertNotIn(external, text)
        # What it polls: the control API's status document.
        document = self.get(metrics_port, "/status.json")
        self.assertStatus(document, 200, "GET /status.json")
        self.assertEqual(document.headers.get("content-type"), "application/json")
        self.assertEqual(sorted(f["id"] for f in document.json()["functions"]), sorted([a["id"], b["id"]]))
        self.assertEqual(document.json().keys(), self.status().keys())
        # Every other path and method: 404 with what is served.
        for method, path in (("GET", "/index.html"), ("HEAD", "/"), ("POST", "/status.json")):
            r = harness.http_request(metrics_port, method, path)
            self.assertEqual(r.status, 404, (method, path))
            if method != "HEAD":
                self.assertEqual(r.body, b"only GET /, /status.json and /metrics are served here\n")

        # One client, one connection: one instance serves it.
        hammer = harness.Hammer(a["trigger_port"], "/json", "keepalive").start()
        try:
            harness.wait_until(lambda: len(hammer.results) > 50, timeout=20)
            browser = LiveBrowser(url, self.profile(), self.tmp)
            try:
                first = self.live_rows(browser, 3)
                time.sleep(2.5)
                second = self.live_rows(browser, first.refreshes + 2)
            finally:
                browser.close()
            shots = [self.screenshot(url, "first.png"), self.screenshot(url, "second.png")]
        finally:
            hammer.stop()
        failures = [r for r in hammer.results if r[2] != 200]
        self.assertEqual(failures, [], "the load's requests all succeeded")

        # (a) The live DOM: both functions, the loaded one's rate above zero and its count growing.
        for rows in (first, second):
            self.assertEqual(set(rows.rows), {a["id"], b["id"]})
            loaded, idle = rows.rows[a["id"]], rows.rows[b["id"]]
            self.assertGreater(float(loaded["rate"]), 0, loaded)
            self.assertEqual(loaded["lifecycle"], "Running")
            self.assertEqual(int(loaded["busy"]) + int(loaded["idle"]), 1, f"one client: one instance {loaded}")
            self.assertRegex(loaded["p50"], r"^\d+\.\d+$")
            self.assertRegex(loaded["p99"], r"^\d+\.\d+$")
            self.assertRegex(loaded["starts"], r"^spawn 1 \d+\.\d+/\d+\.\d+$")
            self.assertEqual(loaded["errors"], "0")
            self.assertEqual(loaded["queue"], "0")
            self.assertRegex(loaded["steered"], r"^\d+$", "the trigger port's eBPF counters")
            self.assertIn(idle["rate"], ("0.0", "-"), idle)
            self.assertEqual(idle["invocations"], "0")
        self.assertGreater(int(second.rows[a["id"]]["invocations"]), int(first.rows[a["id"]]["invocations"]),
                           "the request count moved on the open page")

        # (b) The screenshots: OCR reads both names, and in the loaded function's row a request
        # rate and a request count that grew from one screenshot to the next.
        counts = []
        for shot in shots:
            squeezed = re.sub(r"\s+", " ", shot)
            for fn in (a, b):
                self.assertIn(fn["id"], squeezed, f"OCR of the screenshot:\n{shot}")
            # Its row (found by "alpha" and its lifecycle: the OCR of a whole id in a row sometimes
            # makes "1-alpha" "1l-alpha"; the names were read whole above, in the row or the legend).
            row = next((line for line in shot.splitlines() if "-alpha" in line and "Running" in line), None)
            self.assertIsNotNone(row, f"no row of {a['id']} in the OCR of the screenshot:\n{shot}")
            # ... Running busy idle starting REQ/S REQUESTS p50 ...: the rate is the first number
            # with one decimal, the count the number after it.
            found = re.search(r" (\d+\.\d) (\d+) ", row)
            self.assertIsNotNone(found, f"no rate and count in the row read from the screenshot: {row!r}")
            counts.append(int(found[2]))
        self.assertGreater(counts[1], counts[0], "the request count moved between two screenshots")
        self.assertGreater(counts[0], int(second.rows[a["id"]]["invocations"]), "a later load shows more requests")


if __name__ == "__main__":
    unittest.main()
