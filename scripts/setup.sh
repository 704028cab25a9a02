#!/usr/bin/env bash
# Installs everything Aetherless needs on a bare Debian 12 machine, then builds `aether` and the
# Swift example function. Idempotent: a second run installs nothing and only rebuilds what changed.
#
#   scripts/setup.sh              system packages + release build (.build/release/aether, hello-swift)
#   scripts/setup.sh --deps-only  system packages only (the test script builds for itself)
set -euo pipefail
cd "$(dirname "$0")/.."

# The Swift toolchain ships with the machine image at /opt/swift.
export PATH=/opt/swift/usr/bin:$PATH
if ! command -v swift >/dev/null; then
    echo "setup: no Swift toolchain found at /opt/swift/usr/bin (Swift 6.3 is required)" >&2
    exit 1
fi

# Debian packages the project uses; installed only when missing. libbpf-dev (libbpf 1.1) and
# pkg-config for the eBPF data plane (the BPF programs are compiled by the toolchain's clang);
# iproute2 for the private network namespaces the tests run in; python3-dev for the C half of the
# Python SDK's ring (scripts/build-python-ext.sh); python3-venv for the Python SDK's
# test virtualenvs (scripts/test-venv.sh, sdk/python/tests/test_package.py); tmux for the terminal
# test of `aether top` (tests/integration/test_top.py); chromium (headless), tesseract-ocr and a
# font (fonts-dejavu-core) to load the metrics port's live page, screenshot it and read the
# screenshot back (tests/integration/test_web_page.py).
packages=(python3 python3-venv python3-dev procps curl util-linux libbpf-dev pkg-config iproute2 tmux
    chromium tesseract-ocr tesseract-ocr-eng fonts-dejavu-core)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# CRIU (trixie's 4.1.1) in a private root under /opt/aetherless/criu, for warm snapshots; the
# system's own packages and libc are left alone (scripts/install-criu.sh says why).
bash scripts/install-criu.sh

# The Python handler runtime's bytecode, written once here: handlers inherit
# PYTHONDONTWRITEBYTECODE, and where it is set every cold start and every snapshot template
# would compile the SDK again (~10 ms, and the compiler's garbage lands in the snapshot image).
/usr/bin/python3 -m compileall -q sdk/python/aetherless >/dev/null
# The C half of the Python SDK's ring (_aetherless_cring), for that interpreter.
bash scripts/build-python-ext.sh /usr/bin/python3

if [[ "${1:-}" == "--deps-only" ]]; then
    exit 0
fi
swift build -c release --product aether
# The sandbox helper every confined handler instance starts through (SECURITY.md); `aether`
# looks for it next to itself.
swift build -c release --product aether-sandbox
swift build -c release --product hello-swift
echo "setup: built $(pwd)/.build/release/aether and the hello-swift example"
