#!/usr/bin/env bash
# Cold start vs CRIU restore vs warm, for the example functions, in ONE run:
#   scripts/bench-coldstart.sh [samples per cell, default 15]
# Prints a Markdown table (BENCHMARKS.md explains it). Needs root (criu, cgroups).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
bash scripts/setup.sh >/dev/null
python3 scripts/bench/coldstart.py "${1:-15}"
