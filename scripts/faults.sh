#!/usr/bin/env bash
# Fault injection (tests/faults/run.py): builds `aether`, then drives the real binary with hostile
# and broken handlers, clients and host conditions, inside a private network namespace (only its
# loopback is up) and a private mount namespace (the full-disk scenario mounts a small tmpfs).
# Prints one table (fault, faults injected, requests sent, unexpected outcomes) and the details of
# every unexpected outcome; exits 1 if there was any.
#
#   scripts/faults.sh [--quick] [--only NAME[,NAME...]] [--list] [--keep] [-v]
#
# --quick injects each fault once (about 2 minutes on 2 cores; scripts/test.sh runs it), the full
# run most of them three times (about 3.5 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH

echo "== fault injection (scripts/faults.sh $*)"
swift build --product aether
AETHER_BIN="$(pwd)/.build/debug/aether" AETHER_FAULTS_NAMESPACED=1 \
    exec unshare --net --mount --propagation private -- \
    sh -c 'ip link set lo up && exec "$@"' sh python3 tests/faults/run.py "$@"
