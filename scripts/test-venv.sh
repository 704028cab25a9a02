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

requirements=sdk/python/tests/requirements-frameworks.txt
venv=.build-test/venv
# Debian's python3 (the interpreter handlers run with), not whichever python3 PATH finds first.
python=/usr/bin/python3
[[ -x "$python" ]] || python=$(command -v python3)

stamp="$("$python" -c 'import sys; print(sys.version)' | head -1) $(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$venv/.pins" && "$(cat "$venv/.pins")" == "$stamp" ]]; then
    echo "test-venv: $venv has the pinned packages" >&2
else
    echo "test-venv: making $venv with $python ($requirements)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-virtualenv -r "$requirements" >&2
    "$venv/bin/python" -m pip check >&2
    echo "$stamp" >"$venv/.pins"
fi
echo "$(pwd)/$venv/bin/python"
