#!/usr/bin/env bash
# Builds _aetherless_cring, the C half of the Python SDK's ring (sdk/python/ext/cring.c), into
# sdk/python/ (the folder the orchestrator puts on handlers' PYTHONPATH) for the interpreter
# handlers run with (/usr/bin/python3 unless given). The CRC and futex code is the
# Swift side's (Sources/CAetherIPC). Rebuilds only when a source is newer than the module.
# Usage: scripts/build-python-ext.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-/usr/bin/python3}
read -r include suffix < <("$python" -c \
    'import sysconfig; print(sysconfig.get_paths()["include"], sysconfig.get_config_var("EXT_SUFFIX"))')
if [[ ! -f "$include/Python.h" ]]; then
    echo "build-python-ext: $include/Python.h is missing (install python3-dev)" >&2
    exit 1
fi
sources=(sdk/python/ext/cring.c Sources/CAetherIPC/crc32.c Sources/CAetherIPC/futex.c
    Sources/CAetherIPC/include/aether_ipc.h)
module=sdk/python/_aetherless_cring$suffix
fresh=1
for source in "${sources[@]}"; do
    [[ -f "$module" && "$module" -nt "$source" ]] || fresh=0
done
((fresh)) && exit 0
compiler=$(command -v cc || command -v clang || echo /opt/swift/usr/bin/clang)
# A temporary name, then a rename: a handler starting meanwhile never maps a half-written file.
"$compiler" -O2 -shared -fPIC -fvisibility=hidden -Wall -Werror -I"$include" -ISources/CAetherIPC/include \
    "${sources[@]:0:3}" -o "$module.tmp"
mv -f "$module.tmp" "$module"
echo "build-python-ext: built $module"
