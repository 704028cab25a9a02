#!/usr/bin/env bash
# Shared-memory ring benchmark: round trips vs Unix socket and TCP loopback, throughput vs memcpy,
# CPU per wait policy, single-core kernel rates — all measured in one run, printed as Markdown
# tables (see BENCHMARKS.md). Release build; SCRATCH=<dir> builds there instead of .build.
#   scripts/bench-ipc.sh [--round-trips N] [--seconds S] [--repeats N] [--sizes 65536,...]
#                        [--only round-trip,throughput,policies,kernels] [--each-run]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
scratch=${SCRATCH:-.build}
scripts/setup.sh --deps-only
swift build -c release --scratch-path "$scratch" --product aether-ipc-peer >/dev/null
swift build -c release --scratch-path "$scratch" --product aether-ipc-bench >/dev/null
exec "$scratch/release/aether-ipc-bench" "$@"
