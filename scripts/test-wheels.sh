#!/usr/bin/env bash
# The wheel folder the `requirements:` integration tests install from (tests/integration/
# test_requirements.py): they run without network (in a private network namespace), so the
# orchestrator's pip gets PIP_NO_INDEX=1 and PIP_FIND_LINKS=<this folder>. Holds idna at the version
# pinned below, a small pure-Python package from PyPI, downloaded once with pip (the machine's
# index: PIP_INDEX_URL / pip.conf). Idempotent: a folder holding the pinned wheel is kept as it is.
# Progress goes to stderr; the last line on stdout is the folder.
#
#   scripts/test-wheels.sh           download it or reuse it, print the folder
set -euo pipefail
cd "$(dirname "$0")/.."

pin="idna==3.7"
wheels=.build-test/wheels
python=/usr/bin/python3
[[ -x "$python" ]] || python=$(command -v python3)

if compgen -G "$wheels/idna-3.7-*.whl" >/dev/null; then
    echo "test-wheels: $wheels has $pin" >&2
else
    echo "test-wheels: downloading $pin into $wheels" >&2
    mkdir -p "$wheels"
    "$python" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps -d "$wheels" "$pin" >&2
fi
echo "$(pwd)/$wheels"
