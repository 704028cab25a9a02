"""scripts/bench/plot.py turns small CSV files like the bench scripts' into valid PNG files.

Run with the plotting virtualenv's python (matplotlib and Pillow), as scripts/test.sh does:
    $(scripts/bench/plot-venv.sh) -m unittest discover -s tests/bench -t .
Without matplotlib the plotting tests skip, unless AETHER_REQUIRE_PLOT=1 (then they fail).
"""

import csv
import os
import re
import struct
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLOT = os.path.join(REPO, "scripts", "bench", "plot.py")

try:
    import matplotlib  # noqa: F401

    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False
NEED = os.environ.get("AETHER_REQUIRE_PLOT") == "1"


def png_size(path):
    """(width, height) from the PNG signature and IHDR chunk; fails on anything else."""
    with open(path, "rb") as f:
        head = f.read(33)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", head[8:16])
    assert kind == b"IHDR" and length == 13, f"{path}: no IHDR chunk first"
    return struct.unpack(">II", head[16:24])


def write(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def plot(*args):
    return subprocess.run([sys.executable, PLOT, *args], capture_output=True, text=True, timeout=120)


@unittest.skipUnless(HAVE_MATPLOTLIB or NEED, "matplotlib not installed (scripts/bench/plot-venv.sh makes it)")
class PlotTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="aether-plot-test-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.dir])

    def check_png(self, path):
        self.assertTrue(os.path.isfile(path), path)
        width, height = png_size(path)
        self.assertGreater(width, 300)
        self.assertGreater(height, 200)
        self.assertLess(os.path.getsize(path), 150 * 1024, "keep the committed plots small")
        from PIL import Image  # matplotlib's own dependency

        with Image.open(path) as image:
            image.verify()

    def test_coldstart_samples_to_png(self):
        rows = []
        for side in ("confinement on (default)", "confinement: false"):
            for example in ("hello-python", "notes-api", "hello-swift"):
                for mode, ms in (("cold", 45.0), ("restore", 2.5), ("fork", 2.7), ("warm", 1.0),
                                 ("restore-after-idle", 3.1), ("some-new-mode", 7.0)):
                    rows += [(side, example, mode, f"{ms * (1 + i / 10):.3f}") for i in range(3)]
        write(os.path.join(self.dir, "samples.csv"), ["side", "example", "mode", "ms"], rows)
        result = plot("coldstart", self.dir)
        self.assertEqual(result.returncode, 0, result.stderr)
        png = os.path.join(self.dir, "coldstart-latency.png")
        self.assertEqual(result.stdout.split(), [png])
        self.check_png(png)

    def test_wrk_csv_to_png_with_any_targets(self):
        # Target names the plot has never heard of (a later peer), one round only, a POST row.
        rows = []
        for target in ("aether sdk python", "uvicorn 1w", "some future peer, 3 workers"):
            for connections, rps in ((1, 3000), (16, 9000), (64, 11000)):
                rows.append((1, target, "GET", connections, rps, connections * 90, connections * 400, 0))
            rows.append((1, target, "POST", 16, 5000, 2500, 6000, "yes"))
        path = os.path.join(self.dir, "gateway.csv")
        write(path, ["round", "target", "request", "connections", "rps", "p50_us", "p99_us", "errors"], rows)
        out = os.path.join(self.dir, "plots")
        result = plot("wrk", path, "--out", out, "--title", "test")
        self.assertEqual(result.returncode, 0, result.stderr)
        pngs = [os.path.join(out, "gateway-rps.png"), os.path.join(out, "gateway-p50.png")]
        self.assertEqual(result.stdout.split(), pngs)
        for png in pngs:
            self.check_png(png)

    def test_missing_column_is_an_error(self):
        path = os.path.join(self.dir, "bad.csv")
        write(path, ["round", "target", "rps"], [(1, "x", 10)])
        result = plot("wrk", path)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("lacks the column", result.stderr)


class CsvHeadersTests(unittest.TestCase):
    """The bench scripts write the columns plot.py reads (no matplotlib needed)."""

    def columns(self, name):
        with open(PLOT) as f:
            match = re.search(rf"^{name} = (\[.*\])$", f.read(), re.M)
        return ",".join(eval(match.group(1)))  # a literal list of strings

    def test_wrk_scripts_write_the_plotted_header(self):
        # The plotted columns, then cpu_us (printed in tables, not plotted: older CSVs lack it).
        header = self.columns("WRK_COLUMNS") + ",cpu_us"
        for script in ("bench-gateway.sh", "bench-fastapi.sh"):
            with open(os.path.join(REPO, "scripts", script)) as f:
                self.assertIn(f'echo "{header}" >"$csv"', f.read(), script)

    def test_coldstart_writes_the_plotted_header(self):
        header = self.columns("COLDSTART_COLUMNS")
        with open(os.path.join(REPO, "scripts", "bench", "coldstart.py")) as f:
            self.assertIn('header = ["side", "example", "mode", "ms"]', f.read())
        self.assertEqual(header, "side,example,mode,ms")


if __name__ == "__main__":
    unittest.main()
