#!/usr/bin/env bash
# eBPF data plane benchmark: connection setup and request latency through the sk_lookup dispatch
# vs a socket bound directly to the port vs a userspace relay, measured side by side in one run
# inside a private network namespace (loopback only), printed as Markdown tables (BENCHMARKS.md).
# Release build; SCRATCH=<dir> builds there instead of .build.
#   scripts/bench-dataplane.sh [--connections N] [--round-trips N] [--rounds N] [--size BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
scratch=${SCRATCH:-.build}
scripts/setup.sh --deps-only
swift build -c release --scratch-path "$scratch" --product aether-net-bench >/dev/null
exec unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh "$scratch/release/aether-net-bench" "$@"
