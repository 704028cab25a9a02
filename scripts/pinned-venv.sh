#!/usr/bin/env bash
# A virtualenv of pinned requirements, made with Debian's python3 (the interpreter handlers run
# with, not whichever python3 PATH finds first), shared by scripts/test-venv.sh and
# scripts/bench/plot-venv.sh. Idempotent: a virtualenv made from the same pins and interpreter is
# kept as it is (no network needed once it exists); other pins or another interpreter make it anew.
# Progress goes to stderr, prefixed with NAME; the last line on stdout is the virtualenv's python.
#
#   scripts/pinned-venv.sh NAME REQUIREMENTS VENV [pip install options]
set -euo pipefail
cd "$(dirname "$0")/.."

name=$1 requirements=$2 venv=$3
shift 3
python=/usr/bin/python3
[[ -x "$python" ]] || python=$(command -v python3)

stamp="$("$python" -c 'import sys; print(sys.version)' | head -1) $(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$venv/.pins" && "$(cat "$venv/.pins")" == "$stamp" ]]; then
    echo "$name: $venv has the pinned packages" >&2
else
    echo "$name: making $venv with $python ($requirements)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-virtualenv "$@" \
        -r "$requirements" >&2 || {
        echo "$name: cannot install $requirements into $venv (no way to PyPI? run it outside a network namespace first)" >&2
        rm -rf "$venv"
        exit 1
    }
    "$venv/bin/python" -m pip check >&2
    echo "$stamp" >"$venv/.pins"
fi
echo "$(pwd)/$venv/bin/python"
