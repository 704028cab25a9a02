#!/usr/bin/env bash
# Checks (default) or applies (--fix) the committed .swift-format style on all Swift sources.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
sources=(Package.swift Sources Tests Plugins Fuzz/Package.swift Fuzz/Sources)
if [[ "${1:-}" == "--fix" ]]; then
    swift format format --in-place --recursive --configuration .swift-format "${sources[@]}"
else
    swift format lint --strict --recursive --configuration .swift-format "${sources[@]}"
fi
