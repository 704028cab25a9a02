#!/usr/bin/env bash
# The whole test suite: formatting, a warning-free build, the Swift tests, the Python SDK tests (also
# with FastAPI, Starlette and Flask in a pinned virtualenv, and pip-installed as a package), the bench
# scripts' plotting and the integration tests (the real `aether` binary with real handlers and HTTP clients).
# Installs what it needs first (scripts/setup.sh --deps-only), so it runs on a bare machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH

scripts/setup.sh --deps-only

echo "== format"
scripts/format.sh

# examples/aetherless.yaml names the release hello-swift binary (a confined handler's program must be
# the file handler_path names): the tests that validate the bundled example need it built.
echo "== release build of the hello-swift example"
swift build -c release --product hello-swift

echo "== build (warnings in our own code fail the build)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
swift build --build-tests 2>&1 | tee "$log"
if grep -E "^$(pwd)/(Sources|Tests)/.*: warning:" "$log"; then
    echo "test: the build has warnings in project code (above)" >&2
    exit 1
fi

# The tests attach BPF programs and bind ports: they run in a private network namespace of their
# own (only its loopback is up), so nothing they do reaches the host's interfaces.
in_private_network() {
    unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh "$@"
}

echo "== swift tests (in a private network namespace)"
in_private_network swift test --skip-build

echo "== python sdk tests (the ring's C half, then ring.py alone: the reference must stay right)"
# setup built the C half for /usr/bin/python3; the python3 the tests run may be another one.
scripts/build-python-ext.sh "$(command -v python3)"
AETHERLESS_RING=c python3 -m unittest discover -s sdk/python/tests
AETHERLESS_RING=python python3 -m unittest discover -s sdk/python/tests

# FastAPI, Starlette and Flask apps through the ASGI/WSGI adapters, in the pinned test virtualenv
# (made once, reused while its pins hold); the SDK comes from the tree, not installed. A missing
# framework is an error here, not a skip.
echo "== python sdk with FastAPI, Starlette and Flask (scripts/test-venv.sh)"
venv_python=$(scripts/test-venv.sh)
AETHER_REQUIRE_FRAMEWORKS=1 PYTHONPATH=sdk/python "$venv_python" -m unittest discover -s sdk/python/tests -p test_frameworks.py

# The bench scripts' plotting (scripts/bench/plot.py) on tiny CSV files, with matplotlib from its
# pinned virtualenv (made once from wheels, ~200 MB installed, reused while its pins hold); a missing
# matplotlib is an error here, not a skip.
echo "== bench plots (scripts/bench/plot-venv.sh)"
plot_python=$(scripts/bench/plot-venv.sh)
AETHER_REQUIRE_PLOT=1 "$plot_python" -m unittest discover -s tests/bench -t .

echo "== python sdk as a package (pip install ./sdk/python in a fresh virtualenv)"
AETHER_TEST_PACKAGE=1 python3 -m unittest discover -s sdk/python/tests -p test_package.py

echo "== integration tests (aether up with real handlers, in a private network namespace)"
# test_python_apps.py serves FastAPI and Flask apps with the test virtualenv's python.
# test_requirements.py builds functions' virtualenvs without network, from the wheel folder
# scripts/test-wheels.sh fills (here, outside the namespace); a missing wheel is an error, not a skip.
# test_web_page.py loads the metrics port's page in headless Chromium and reads its screenshot with
# tesseract (both from setup.sh); a missing one is an error, not a skip.
wheels=$(scripts/test-wheels.sh)
AETHER_TEST_VENV_PYTHON="$venv_python" AETHER_TEST_WHEELS="$wheels" AETHER_REQUIRE_WHEELS=1 AETHER_REQUIRE_BROWSER=1 \
    AETHER_BIN="$(pwd)/.build/debug/aether" \
    in_private_network python3 -m unittest discover -s tests/integration -t .

# Fault injection (tests/faults/run.py, about 2 minutes): hostile handlers, clients and host conditions
# against the real binary, each fault once; it runs itself in private network and mount namespaces.
echo "== fault injection (tests/faults/run.py --quick)"
AETHER_BIN="$(pwd)/.build/debug/aether" python3 tests/faults/run.py --quick

# Coverage-guided fuzzing (Fuzz/, its own package and build folder): each target replays its
# committed corpus, then mutates for 20 s; any crash, hang or sanitizer report fails the run.
# About 2.5 minutes from a fresh clone on 2 cores (90 s of it the ASan build of Fuzz/).
echo "== fuzzing (libFuzzer, 20 s per target)"
scripts/fuzz.sh 20
