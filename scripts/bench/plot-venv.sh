#!/usr/bin/env bash
# The plotting virtualenv of the bench scripts: matplotlib and its dependencies at the versions pinned
# in scripts/bench/plot-requirements.txt (wheels only), in .build-bench/plot-venv, made with the
# system python3. Idempotent: a virtualenv made from the same pins and interpreter is kept as it is
# (no network needed, so the benches can plot inside a private network namespace once it exists);
# other pins or another interpreter make it anew. Progress goes to stderr; the last line on stdout
# is the virtualenv's python.
#
#   scripts/bench/plot-venv.sh       make or reuse it, print its python
set -euo pipefail
cd "$(dirname "$0")/../.."

requirements=scripts/bench/plot-requirements.txt
venv=.build-bench/plot-venv
python=/usr/bin/python3
[[ -x "$python" ]] || python=$(command -v python3)

stamp="$("$python" -c 'import sys; print(sys.version)' | head -1) $(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$venv/.pins" && "$(cat "$venv/.pins")" == "$stamp" ]]; then
    echo "plot-venv: $venv has the pinned packages" >&2
else
    echo "plot-venv: making $venv with $python ($requirements)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-virtualenv --only-binary=:all: \
        -r "$requirements" >&2 || {
        echo "plot-venv: cannot install $requirements into $venv (no way to PyPI? run it outside a network namespace first)" >&2
        rm -rf "$venv"
        exit 1
    }
    "$venv/bin/python" -m pip check >&2
    echo "$stamp" >"$venv/.pins"
fi
echo "$(pwd)/$venv/bin/python"
