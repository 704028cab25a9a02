#!/usr/bin/env bash
# The test virtualenv: FastAPI, Starlette, Flask (the Python SDK's framework tests) and prometheus-client
# (the /metrics parser test) at the versions pinned in
# sdk/python/tests/requirements-frameworks.txt, in .build-test/venv, made with the system python3.
# Idempotent: a virtualenv made from the same pins and interpreter is kept as it is; other pins or
# another interpreter make it anew. The SDK is not installed into it (tests put sdk/python on
# PYTHONPATH, as the orchestrator does for handlers). Progress goes to stderr; the last line on
# stdout is the virtualenv's python.
#
#   scripts/test-venv.sh             make or reuse it, print its python
set -euo pipefail
cd "$(dirname "$0")/.."

exec scripts/pinned-venv.sh test-venv sdk/python/tests/requirements-frameworks.txt .build-test/venv
