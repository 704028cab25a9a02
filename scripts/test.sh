#!/usr/bin/env bash
# The whole test suite: formatting, a warning-free build, the Swift tests, the Python SDK tests and
# the integration tests (the real `aether` binary with real handlers and HTTP clients).
# Installs what it needs first (scripts/setup.sh --deps-only), so it runs on a bare machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH

scripts/setup.sh --deps-only

echo "== format"
scripts/format.sh

echo "== build (warnings in our own code fail the build)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
swift build --build-tests 2>&1 | tee "$log"
if grep -E "^$(pwd)/(Sources|Tests)/.*: warning:" "$log"; then
    echo "test: the build has warnings in project code (above)" >&2
    exit 1
fi

echo "== swift tests"
swift test --skip-build

echo "== python sdk tests"
python3 -m unittest discover -s sdk/python/tests

echo "== integration tests (aether up with real handlers)"
AETHER_BIN="$(pwd)/.build/debug/aether" python3 -m unittest discover -s tests/integration -t .
