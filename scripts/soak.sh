#!/usr/bin/env bash
# Soak: wrk against a Python sdk function and a process handler for SECONDS (default 60) at 16
# and then 256 connections, with three hot redeploys and one `aether restart` during each run,
# in a private network namespace. Prints, per run: requests, non-2xx answers, socket errors
# (connect/read/write/timeout) and the orchestrator's descriptors and RSS before and after.
#
#   scripts/soak.sh [seconds per run, default 60]
#
# Exit status 1 if any run saw a non-2xx answer, or the orchestrator's descriptor count grew by
# more than 16 over a run. Socket errors are printed, not failed on: a process handler's
# keep-alive connections end when its old generation stops (it cannot be told to answer
# `Connection: close`, as the gateway does for sdk functions), and wrk counts the reconnect.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
seconds="${1:-60}"

if [[ "${AETHER_SOAK_INSIDE:-}" != 1 ]]; then
    scripts/setup.sh --deps-only >/dev/null
    command -v wrk >/dev/null || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
    }
    swift build -c release --product aether >/dev/null
    exec unshare --net -- env AETHER_SOAK_INSIDE=1 sh -c 'ip link set lo up && exec bash "$0" "$1"' "$0" "$seconds"
fi

aether=.build/release/aether
work=$(mktemp -d /tmp/aether-soak-XXXXXX)
# Confined handlers run as their function's own uid: their folder must be readable by it.
chmod 755 "$work"
socket="$work/aether.sock"
cleanup() {
    "$aether" down --socket "$socket" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/hello.py" <<'PY'
import aetherless

@aetherless.handler
def handle(req):
    return {"hello": "world"}
PY
cat >"$work/process.py" <<'PY'
import http.server, os, socket

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b'{"hello":"process"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["AETHER_TRIGGER_PORT"])), Handler)
control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
control.connect(os.environ["AETHER_SOCKET"])
control.sendall(b"READY\n")
server.serve_forever()
PY
config() { # $1: a value that changes between deploys, so each one replaces both functions
    cat <<YAML
orchestrator:
  control_socket: $socket
  state_dir: $work/state
  python: /usr/bin/python3
functions:
  - id: soak-python
    trigger_port: 19601
    handler_path: $work/hello.py
    max_instances: 2
    max_queue: 512
    environment: {ROUND: "$1"}
  - id: soak-process
    trigger_port: 19602
    handler_path: $work/process.py
    protocol: process
    environment: {ROUND: "$1"}
YAML
}
config 0 >"$work/aether.yaml"

"$aether" up -c "$work/aether.yaml" 2>"$work/up.log" &
"$aether" wait --socket "$socket" --timeout 60 >/dev/null

orchestrator_pid() { "$aether" list --json --socket "$socket" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])'; }
descriptors() { ls "/proc/$1/fd" | wc -l; }
rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
has_restart=0
"$aether" restart --help >/dev/null 2>&1 && has_restart=1

failed=0
round=0
for connections in 16 256; do
    for port in 19601 19602; do
        pid=$(orchestrator_pid)
        fds_before=$(descriptors "$pid")
        rss_before=$(rss_kib "$pid")
        out="$work/wrk-$connections-$port.txt"
        wrk -t2 -c"$connections" -d"${seconds}s" --timeout 10s "http://127.0.0.1:$port/" >"$out" 2>&1 &
        wrk_pid=$!
        for step in 1 2 3; do
            sleep "$(awk -v s="$seconds" 'BEGIN { print s / 5 }')"
            round=$((round + 1))
            config "$round" >"$work/deploy.yaml"
            "$aether" deploy --socket "$socket" "$work/deploy.yaml" >/dev/null
        done
        sleep "$(awk -v s="$seconds" 'BEGIN { print s / 5 }')"
        restarted="no"
        if ((has_restart)); then
            "$aether" restart --socket "$socket" >/dev/null
            restarted="yes"
        fi
        wait "$wrk_pid"
        pid_after=$(orchestrator_pid)
        fds_after=$(descriptors "$pid_after")
        rss_after=$(rss_kib "$pid_after")
        requests=$(awk '/requests in/ { print $1 }' "$out")
        non2xx=$(awk '/Non-2xx/ { print $NF }' "$out")
        errors=$(awk '/Socket errors/ { sub(/.*Socket errors: /, ""); print }' "$out")
        printf "c=%-3s port %s: %s requests, non-2xx %s, socket errors %s; 3 redeploys, restart %s; fds %s -> %s, RSS %s -> %s KiB\n" \
            "$connections" "$port" "${requests:-0}" "${non2xx:-0}" "${errors:-none}" "$restarted" \
            "$fds_before" "$fds_after" "$rss_before" "$rss_after"
        if [[ -n "$non2xx" ]] || ((fds_after > fds_before + 16)); then failed=1; fi
    done
done
exit "$failed"
