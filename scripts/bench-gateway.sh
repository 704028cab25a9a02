#!/usr/bin/env bash
# Per-request overhead of `aether up`, side by side in ONE run on this machine (wrk, loopback):
#
#   aether sdk  python   Python SDK handler behind the gateway and the shared-memory ring
#   aether sdk  swift    Swift SDK handler, same path
#   python http.server   the same answer from Python's ThreadingHTTPServer alone (what a
#                        process-protocol handler is; aether is not on the request path)
#   nginx -> python      nginx reverse proxy in front of that server: the proxy architecture of
#                        OpenFaaS's watchdog / Knative's queue-proxy, which we cannot run here
#   nginx static         nginx answering by itself: the floor of an HTTP answer on this host
#
#   scripts/bench-gateway.sh [seconds per run, default 5]
#
# The aether targets run twice, in the same run in alternating order over two rounds, and the
# script prints the ratios: confined (the default) and with `confinement: false` (the cost of
# confinement, SECURITY.md). AETHER_BENCH_BASELINE=DIR compares against another build instead
# (a checkout with its own release build, e.g. a `git worktree` of the previous commit: its
# aether, hello-swift and sdk/python).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
duration="${1:-5}"

missing=()
for tool in wrk:wrk nginx:nginx-light; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
swift build -c release --product aether >/dev/null
swift build -c release --product aether-sandbox >/dev/null
swift build -c release --product hello-swift >/dev/null

work=$(mktemp -d /tmp/aether-bench-XXXXXX)
# Confined handlers run as their function's own uid: their folder must be readable by it.
chmod 755 "$work"
pids=()
cleanup() {
    [[ -S "$work/aether.sock" ]] && .build/release/aether down --socket "$work/aether.sock" >/dev/null 2>&1 || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Every server answers GET / with the same JSON: {"hello":"world"}.
cat >"$work/hello.py" <<'PY'
import aetherless

@aetherless.handler
def handle(req):
    return {"hello": "world"}
PY
cat >"$work/plain.py" <<'PY'
import http.server, sys
BODY = b'{"hello":"world"}'
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
cat >"$work/aether.yaml" <<YAML
orchestrator:
  control_socket: $work/aether.sock
functions:
  - id: bench-python
    trigger_port: 18181
    handler_path: $work/hello.py
    max_instances: 1
  - id: bench-swift
    trigger_port: 18182
    handler_path: $(pwd)/.build/release/hello-swift
    max_instances: 1
YAML
cat >"$work/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    upstream python { server 127.0.0.1:18183; keepalive 64; }
    server {
        listen 127.0.0.1:18184;
        location / { default_type application/json; return 200 '{"hello":"world"}'; }
    }
    server {
        listen 127.0.0.1:18185;
        location / { proxy_pass http://python; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
NGINX

.build/release/aether up -c "$work/aether.yaml" 2>"$work/aether.log" &
pids+=($!)
baseline="${AETHER_BENCH_BASELINE:-}"
# Its own folder: handler sockets live beside the control socket.
mkdir -p "$work/baseline"
if [[ -n "$baseline" ]]; then
    other="baseline"
    baseline=$(cd "$baseline" && pwd)
    sed -e "s|$work/aether.sock|$work/baseline/aether.sock|" -e "s|18181|18191|" -e "s|18182|18192|" \
        -e "s|$(pwd)/.build/release/hello-swift|$baseline/.build/release/hello-swift|" \
        "$work/aether.yaml" >"$work/baseline.yaml"
    AETHER_PYTHON_SDK="$baseline/sdk/python" "$baseline/.build/release/aether" up -c "$work/baseline.yaml" \
        2>"$work/baseline.log" &
else
    other="unconfined"
    sed -e "s|$work/aether.sock|$work/baseline/aether.sock|" -e "s|18181|18191|" -e "s|18182|18192|" \
        -e "s|^orchestrator:|orchestrator:\n  confinement: false|" "$work/aether.yaml" >"$work/baseline.yaml"
    .build/release/aether up -c "$work/baseline.yaml" 2>"$work/baseline.log" &
fi
pids+=($!)
python3 "$work/plain.py" 18183 2>"$work/plain.log" &
pids+=($!)
nginx -c "$work/nginx.conf" 2>"$work/nginx.log" &
pids+=($!)
for _ in $(seq 100); do
    .build/release/aether list --socket "$work/aether.sock" >/dev/null 2>&1 && curl -sf http://127.0.0.1:18183/ >/dev/null \
        && curl -sf http://127.0.0.1:18185/ >/dev/null \
        && curl -sf http://127.0.0.1:18191/ >/dev/null && break
    sleep 0.2
done

# wrk prints latency with units; normalise to microseconds.
to_us() {
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'
}
run() { # name url connections -> "rps p50_us p99_us errors"
    local out
    out=$(wrk -t1 -c"$3" -d"${duration}s" --latency "$2" 2>&1)
    local rps p50 p99 errors
    rps=$(awk '/Requests\/sec/ { printf "%d", $2 }' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    errors=$(awk '/Non-2xx|Socket errors/ { e = e $0 } END { print (e == "" ? "0" : "yes") }' <<<"$out")
    echo "$rps $p50 $p99 $errors"
}

rounds=2
targets=(
    "aether sdk python|http://127.0.0.1:18181/"
    "$other sdk python|http://127.0.0.1:18191/"
    "aether sdk swift|http://127.0.0.1:18182/"
    "$other sdk swift|http://127.0.0.1:18192/"
    "python http.server|http://127.0.0.1:18183/"
    "nginx -> python|http://127.0.0.1:18185/"
    "nginx static|http://127.0.0.1:18184/"
)
echo "machine: $(nproc) cores, $(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | sed 's/^ //'), kernel $(uname -r)"
echo "wrk -t1, ${duration} s per run, GET / -> {\"hello\":\"world\"}, all on 127.0.0.1"
echo
printf "| %-20s | %12s | %10s | %10s | %13s | %10s | %10s | %6s |\n" target "1 conn req/s" "p50 us" "p99 us" "16 conn req/s" "p50 us" "p99 us" errors
printf "|%s|%s|%s|%s|%s|%s|%s|%s|\n" "----------------------" "--------------" "------------" "------------" "---------------" "------------" "------------" "--------"
declare -A single rps1 rps16
for round in $(seq "$rounds"); do
    order=("${targets[@]}")
    if ((round % 2 == 0)); then # the second round runs each A/B pair the other way round
        order=("${targets[1]}" "${targets[0]}" "${targets[3]}" "${targets[2]}" "${targets[@]:4}")
    fi
    for entry in "${order[@]}"; do
        name="${entry%%|*}"
        url="${entry##*|}"
        read -r r1 a1 b1 e1 <<<"$(run "$name" "$url" 1)"
        read -r r16 a16 b16 e16 <<<"$(run "$name" "$url" 16)"
        single["$name"]=$(awk -v s="${single[$name]:-0}" -v v="$a1" 'BEGIN { print s + v }')
        rps1["$name"]=$(awk -v s="${rps1[$name]:-0}" -v v="$r1" 'BEGIN { print s + v }')
        rps16["$name"]=$(awk -v s="${rps16[$name]:-0}" -v v="$r16" 'BEGIN { print s + v }')
        errors="no"
        [[ "$e1" != "0" || "$e16" != "0" ]] && errors="YES"
        printf "| %-20s | %12s | %10s | %10s | %13s | %10s | %10s | %6s |\n" "$name" "$r1" "$a1" "$b1" "$r16" "$a16" "$b16" "$errors"
    done
done
echo
for language in python swift; do
    awk -v l="$language" -v o="$other" -v a1="${rps1[aether sdk $language]}" -v b1="${rps1[$other sdk $language]}" \
        -v a16="${rps16[aether sdk $language]}" -v b16="${rps16[$other sdk $language]}" \
        -v ap="${single[aether sdk $language]}" -v bp="${single[$other sdk $language]}" 'BEGIN {
        printf "A/B sdk %s, aether (confined) / %s (sums over both rounds): 1 conn req/s %.2f, p50 %.2f; 16 conn req/s %.2f\n", l, o, a1 / b1, ap / bp, a16 / b16
    }'
done
awk -v a="${single[aether sdk python]}" -v p="${single[nginx -> python]}" -v d="${single[python http.server]}" 'BEGIN {
    printf "1-connection p50 (summed over rounds): aether sdk python / nginx->python = %.2f; aether sdk python / python http.server = %.2f\n", a / p, a / d
}'
.build/release/aether stats --socket "$work/aether.sock"
