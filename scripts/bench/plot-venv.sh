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

exec scripts/pinned-venv.sh plot-venv scripts/bench/plot-requirements.txt .build-bench/plot-venv --only-binary=:all:
