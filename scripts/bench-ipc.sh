#!/usr/bin/env bash
# Shared-memory ring benchmark: round trips vs Unix socket and TCP loopback, throughput vs memcpy,
# CPU per wait policy — all measured in one run, printed as Markdown tables (see BENCHMARKS.md).
#   scripts/bench-ipc.sh [--round-trips N] [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
scripts/setup.sh --deps-only
swift build -c release --product aether-ipc-peer >/dev/null
swift build -c release --product aether-ipc-bench >/dev/null
exec .build/release/aether-ipc-bench "$@"
