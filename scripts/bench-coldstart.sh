#!/usr/bin/env bash
# Cold start vs CRIU restore vs warm, for the example functions, in ONE run:
#   scripts/bench-coldstart.sh [samples per cell, default 15]
# Prints a Markdown table (BENCHMARKS.md explains it). Needs root (criu, cgroups).
# Into AETHER_BENCH_OUT (default bench-results/coldstart): the printed tables (tables.md), every
# sample as CSV (samples.csv, orchestrator.csv, memory.csv; scripts/bench/coldstart.py says what is
# in them) and coldstart-latency.png, their plot (scripts/bench/plot.py, with matplotlib from
# scripts/bench/plot-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
bash scripts/setup.sh >/dev/null
export AETHER_BENCH_OUT="${AETHER_BENCH_OUT:-bench-results/coldstart}"
mkdir -p "$AETHER_BENCH_OUT"
# Made (or found) before the run, so that a missing package index fails here and not after it.
plot_python=$(scripts/bench/plot-venv.sh)
rm -f "$AETHER_BENCH_OUT"/{samples,orchestrator,memory}.csv "$AETHER_BENCH_OUT/coldstart-latency.png"
python3 -u scripts/bench/coldstart.py "${1:-15}" | tee "$AETHER_BENCH_OUT/tables.md"
echo
echo "plots:"
"$plot_python" scripts/bench/plot.py coldstart "$AETHER_BENCH_OUT"
