#!/bin/sh
# The Swift example function is the `hello-swift` product of this package; `scripts/setup.sh`
# builds it in release mode. exec keeps the PID, which is how the orchestrator knows the handler.
exec "$(dirname "$0")/../../.build/release/hello-swift" "$@"
