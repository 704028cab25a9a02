#!/usr/bin/env bash
# Per-request overhead of `aether up` against the servers people actually deploy on, side by
# side in ONE run on this machine (wrk -t1, loopback):
#
#   aether sdk python      Python SDK handler behind the gateway and the shared-memory ring,
#                          `max_instances: 1`, `concurrency: 1` (one Python process)
#   aether sdk python x2   the same handler with `max_instances: 2` (the default; `min_warm: 2`
#                          so that both instances are up, like a peer's two workers)
#   aether sdk swift       Swift SDK handler (examples/hello-swift), same path, one instance
#   uvicorn 1w / 2w        uvicorn --http httptools --loop uvloop, --workers 1 / 2
#   granian 1w / 2w        granian --interface asgi --loop uvloop, --workers 1 / 2
#   hummingbird            a plain Hummingbird 2 server (bench/swift-peer): the Swift SDK's peer
#   python http.server     Python's ThreadingHTTPServer alone (what a process-protocol handler is)
#   nginx -> python        nginx reverse proxy in front of that server: the proxy architecture of
#                          OpenFaaS's watchdog / Knative's queue-proxy, which we cannot run here
#   nginx static           nginx answering by itself: the floor of an HTTP answer on this host
#
#   scripts/bench-gateway.sh [seconds per run, default 5]
#   scripts/bench-gateway.sh --prepare   # only build and install (needs PyPI the first time)
#
# In a private network namespace (nothing else on its loopback), prepare first, since the
# namespace has no way out to PyPI or Debian's mirror:
#   scripts/bench-gateway.sh --prepare && unshare --net -- sh -c 'ip link set lo up && bash scripts/bench-gateway.sh 5'
#
# uvicorn and granian serve the same raw ASGI app (no framework) and are installed, at the
# pinned versions below, into their own virtualenv .build-bench/venv (reused while those
# versions are installed), with the `python3` aether runs the SDK with. The Hummingbird peer is
# built in release mode into .build-bench/swift-peer. Every server answers GET / with
# {"hello":"world"} (application/json; hello-swift adds "runtime":"swift") and echoes the body
# of a POST / (application/octet-stream; hello-swift and nginx static do not echo: no POST numbers).
#
# Every target runs, in order, with 1, 16 and 64 connections (GET) and with 16 connections
# posting a 64 KiB body (a wrk Lua script), twice: the targets alternate, round 2 in the reverse
# order of round 1. The script prints each round's rows, then one row per target with the mean
# of the two rounds (req/s, p50/p99 in µs per connection count; `errors` names the runs in which
# wrk saw non-2xx answers or socket errors), then the ratios issue 15's
# "Done when" asks for (aether / the better of uvicorn and granian, Swift SDK / Hummingbird).
#
# It also prints the CPU each target cost per request (cpu_us: the machine's CPU time on everything
# but wrk during the run, per answered request; scripts/bench/wrk.sh), which does not depend on
# whether a run saturated the CPUs and moves far less between runs than req/s on a shared VM.
#
# Into AETHER_BENCH_OUT (default bench-results/gateway): the printed tables (tables.md), every
# measurement as CSV (gateway.csv: round,target,request,connections,rps,p50_us,p99_us,errors,cpu_us,
# one row per target, request kind GET or POST, connection count and round) and their plots
# (scripts/bench/plot.py, with matplotlib from scripts/bench/plot-venv.sh, which --prepare makes):
# gateway-rps.png (req/s vs connections per target) and gateway-p50.png (p50 vs connections).
#
# The aether sdk targets also run on a second orchestrator for an A/B: with
# `confinement: false` ("unconfined", the cost of confinement, SECURITY.md), or with
# AETHER_BENCH_BASELINE=DIR another build (a checkout with its own release build, e.g. a
# `git worktree` of the previous commit: its aether, hello-swift and sdk/python).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
prepare_only=no
[[ "${1:-}" == --prepare ]] && prepare_only=yes && shift
duration="${1:-5}"
rounds=2
post_connections=16
# What was tested on Debian 12 with Python 3.11 (2026-12); pip installs exactly these.
python_pins=(uvicorn==0.54.0 httptools==0.9.0 uvloop==0.23.0 h11==0.16.0 click==8.5.1 granian==2.8.9)

missing=()
for tool in wrk:wrk nginx:nginx-light curl:curl; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
swift build -c release --product aether >/dev/null
swift build -c release --product aether-sandbox >/dev/null
swift build -c release --product hello-swift >/dev/null
peer_build=(swift build -c release --package-path bench/swift-peer --scratch-path .build-bench/swift-peer)
"${peer_build[@]}" --product swift-peer >/dev/null
swift_peer="$("${peer_build[@]}" --show-bin-path)/swift-peer"

venv=.build-bench/venv
venv_ready() {
    [[ -x "$venv/bin/python" ]] || return 1
    local installed
    installed=$("$venv/bin/python" -m pip freeze 2>/dev/null) || return 1
    for pin in "${python_pins[@]}"; do
        grep -qixF "$pin" <<<"$installed" || return 1
    done
}
if ! venv_ready; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${python_pins[@]}" || {
        echo "cannot install ${python_pins[*]} into $venv (in a network namespace? run --prepare outside it first)" >&2
        exit 1
    }
fi
# matplotlib for the plots at the end (made once; found without network after that).
plot_python=$(scripts/bench/plot-venv.sh)
[[ "$prepare_only" == yes ]] && exit 0

out="${AETHER_BENCH_OUT:-bench-results/gateway}"
mkdir -p "$out"
rm -f "$out"/gateway.csv "$out"/gateway-*.png
csv="$out/gateway.csv"
echo "round,target,request,connections,rps,p50_us,p99_us,errors,cpu_us" >"$csv"
# Everything printed from here on goes to tables.md too.
exec > >(tee "$out/tables.md")

work=$(mktemp -d /tmp/aether-bench-XXXXXX)
# Confined handlers run as their function's own uid: their folder must be readable by it.
chmod 755 "$work"
pids=()
cleanup() {
    for sock in "$work/aether.sock" "$work/baseline/aether.sock"; do
        [[ -S "$sock" ]] && .build/release/aether down --socket "$sock" >/dev/null 2>&1 || true
    done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Every server answers GET / with the same JSON, {"hello":"world"}, and echoes a POST's body.
cat >"$work/hello.py" <<'PY'
import aetherless

@aetherless.handler
def handle(req):
    if req.method == "POST":
        return req.body  # bytes: 200, application/octet-stream
    return {"hello": "world"}
PY
cat >"$work/plain.py" <<'PY'
import http.server, sys
BODY = b'{"hello":"world"}'
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1
    def answer(self, content_type, body):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer("application/json", BODY)
    def do_POST(self):
        self.answer("application/octet-stream", self.rfile.read(int(self.headers.get("Content-Length", 0))))
    def log_message(self, *args):
        pass
# A listen backlog like the other servers' (uvicorn 2048, granian 1024, Hummingbird 256), not
# socketserver's 5, which drops the SYNs of 64 connections opened at once.
http.server.ThreadingHTTPServer.request_queue_size = 256
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
# The raw ASGI app uvicorn and granian serve: no framework, as little Python as the answer needs.
cat >"$work/peer_app.py" <<'PY'
BODY = b'{"hello":"world"}'
GET_START = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"17")]}
GET_BODY = {"type": "http.response.body", "body": BODY}

async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "http":
        if scope["method"] == "POST":
            message = await receive()
            body = message.get("body", b"")
            if message.get("more_body", False):
                chunks = [body]
                while message.get("more_body", False):
                    message = await receive()
                    chunks.append(message.get("body", b""))
                body = b"".join(chunks)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        else:
            await send(GET_START)
            await send(GET_BODY)
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
PY
head -c 65536 /dev/urandom >"$work/body.bin"
cat >"$work/post.lua" <<LUA
local f = assert(io.open("$work/body.bin", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
LUA

# One orchestrator's configuration: socket, first port (+1 Python, +2 Swift), Swift handler, an
# extra orchestrator line, and whether to add the max_instances: 2 function (+6).
aether_config() {
    cat <<YAML
orchestrator:
  control_socket: $1
$4
functions:
  - id: bench-python
    trigger_port: $(($2 + 1))
    handler_path: $work/hello.py
    max_instances: 1
    max_queue: 256
  - id: bench-swift
    trigger_port: $(($2 + 2))
    handler_path: $3
    max_instances: 1
    max_queue: 256
YAML
    if [[ "$5" == yes ]]; then
        cat <<YAML
  - id: bench-python-2
    trigger_port: $(($2 + 6))
    handler_path: $work/hello.py
    max_instances: 2
    min_warm: 2
    max_queue: 256
YAML
    fi
}
cat >"$work/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx-body;
    proxy_temp_path $work/nginx-proxy;
    # A 64 KiB body and its echo stay in memory.
    client_body_buffer_size 128k;
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;
    proxy_busy_buffers_size 64k;
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

aether_config "$work/aether.sock" 18180 "$(pwd)/.build/release/hello-swift" "" yes >"$work/aether.yaml"
.build/release/aether up -c "$work/aether.yaml" 2>"$work/aether.log" &
pids+=($!)
baseline="${AETHER_BENCH_BASELINE:-}"
# Its own folder: handler sockets live beside the control socket.
mkdir -p "$work/baseline"
if [[ -n "$baseline" ]]; then
    other="baseline"
    baseline=$(cd "$baseline" && pwd)
    aether_config "$work/baseline/aether.sock" 18190 "$baseline/.build/release/hello-swift" "" no >"$work/baseline.yaml"
    AETHER_PYTHON_SDK="$baseline/sdk/python" "$baseline/.build/release/aether" up -c "$work/baseline.yaml" \
        2>"$work/baseline.log" &
else
    other="unconfined"
    aether_config "$work/baseline/aether.sock" 18190 "$(pwd)/.build/release/hello-swift" "  confinement: false" no \
        >"$work/baseline.yaml"
    .build/release/aether up -c "$work/baseline.yaml" 2>"$work/baseline.log" &
fi
pids+=($!)
python3 "$work/plain.py" 18183 2>"$work/plain.log" &
pids+=($!)
nginx -c "$work/nginx.conf" 2>"$work/nginx.log" &
pids+=($!)
uvicorn=("$venv/bin/uvicorn" peer_app:app --app-dir "$work" --host 127.0.0.1 --http httptools --loop uvloop
    --no-access-log --log-level warning --lifespan off)
granian=("$venv/bin/granian" --interface asgi --loop uvloop --no-ws --host 127.0.0.1 --log-level warning
    --working-dir "$work" peer_app:app)
"${uvicorn[@]}" --port 18201 --workers 1 2>"$work/uvicorn1.log" &
pids+=($!)
"${uvicorn[@]}" --port 18202 --workers 2 2>"$work/uvicorn2.log" &
pids+=($!)
"${granian[@]}" --port 18203 --workers 1 >"$work/granian1.log" 2>&1 &
pids+=($!)
"${granian[@]}" --port 18204 --workers 2 >"$work/granian2.log" 2>&1 &
pids+=($!)
"$swift_peer" 18210 2>"$work/swift-peer.log" &
pids+=($!)

# name|url|whether it echoes a POST
targets=(
    "aether sdk python|http://127.0.0.1:18181/|echo"
    "$other sdk python|http://127.0.0.1:18191/|echo"
    "aether sdk python x2|http://127.0.0.1:18186/|echo"
    "uvicorn 1w|http://127.0.0.1:18201/|echo"
    "granian 1w|http://127.0.0.1:18203/|echo"
    "uvicorn 2w|http://127.0.0.1:18202/|echo"
    "granian 2w|http://127.0.0.1:18204/|echo"
    "aether sdk swift|http://127.0.0.1:18182/|-"
    "$other sdk swift|http://127.0.0.1:18192/|-"
    "hummingbird|http://127.0.0.1:18210/|echo"
    "python http.server|http://127.0.0.1:18183/|echo"
    "nginx -> python|http://127.0.0.1:18185/|echo"
    "nginx static|http://127.0.0.1:18184/|-"
)
# Wait until every target answers GET and echoes the 64 KiB body byte for byte.
answers() {
    curl -sf -o /dev/null "$1" || return 1
    [[ "$2" != echo ]] || curl -sf --data-binary @"$work/body.bin" -H 'Content-Type: application/octet-stream' "$1" \
        | cmp -s - "$work/body.bin"
}
for entry in "${targets[@]}"; do
    IFS='|' read -r name url echoes <<<"$entry"
    for attempt in $(seq 150); do
        answers "$url" "$echoes" && break
        if ((attempt == 150)); then
            echo "$name ($url) does not answer as expected; logs in $work:" >&2
            tail -n 5 "$work"/*.log >&2
            exit 1
        fi
        sleep 0.2
    done
done

source scripts/bench/wrk.sh
# One second of load on each target first: instances started, caches and JITs warm.
for entry in "${targets[@]}"; do
    IFS='|' read -r name url echoes <<<"$entry"
    wrk -t1 -c16 -d1s "$url" >/dev/null 2>&1 || true
    [[ "$echoes" == echo ]] && { wrk -t1 -c16 -d1s -s "$work/post.lua" "$url" >/dev/null 2>&1 || true; }
done

columns=(1 16 64 post)
row_format="| %-22s | %9s | %13s | %9s | %13s | %9s | %13s | %9s | %13s | %6s |\n"
header() {
    printf "$row_format" target "c=1 req/s" "p50/p99 us" "c=16 req/s" "p50/p99 us" "c=64 req/s" "p50/p99 us" \
        "POST req/s" "p50/p99 us" errors
    printf "|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n" "------------------------" "-----------" "---------------" \
        "-----------" "---------------" "-----------" "---------------" "-----------" "---------------" "--------"
}
declare -A rps p50 p99 cpu failed
add() { # array-name key value
    local -n sums=$1
    sums["$2"]=$(awk -v s="${sums[$2]:-0}" -v v="$3" 'BEGIN { print s + v }')
}
echo "machine: $(nproc) cores, $(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | sed 's/^ //'), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t1, ${duration} s per run, all on 127.0.0.1; GET / -> {\"hello\":\"world\"}; POST: ${post_connections} connections, a 64 KiB body echoed"
echo "$("$venv/bin/python" --version), $(printf '%s ' "${python_pins[@]}")"
for round in $(seq "$rounds"); do
    order=("${targets[@]}")
    if ((round % 2 == 0)); then # reverse order: every pair of neighbours runs the other way round
        order=()
        for ((i = ${#targets[@]} - 1; i >= 0; i--)); do order+=("${targets[i]}"); done
    fi
    echo
    echo "round $round of $rounds"
    header
    for entry in "${order[@]}"; do
        IFS='|' read -r name url echoes <<<"$entry"
        cells=()
        errors="no"
        for column in "${columns[@]}"; do
            if [[ "$column" == post ]]; then
                if [[ "$echoes" != echo ]]; then
                    cells+=("-" "-")
                    continue
                fi
                read -r r a b e u <<<"$(run "$url" "$post_connections" -s "$work/post.lua")"
                echo "$round,\"$name\",POST,$post_connections,$r,$a,$b,$e,$u" >>"$csv"
            else
                read -r r a b e u <<<"$(run "$url" "$column")"
                echo "$round,\"$name\",GET,$column,$r,$a,$b,$e,$u" >>"$csv"
            fi
            add rps "$name|$column" "$r"
            add p50 "$name|$column" "$a"
            add p99 "$name|$column" "$b"
            add cpu "$name|$column" "$u"
            if [[ "$e" != "0" ]]; then
                errors=$([[ "$errors" == no ]] && echo "$column" || echo "$errors,$column")
                failed["$name"]=$([[ -z "${failed[$name]:-}" ]] && echo "$column" || echo "${failed[$name]},$column")
            fi
            cells+=("$r" "$a/$b")
        done
        printf "$row_format" "$name" "${cells[@]}" "$errors"
    done
done

mean() { awk -v s="$1" -v n="$rounds" 'BEGIN { printf "%d", s / n + 0.5 }'; }
echo
echo "mean of the $rounds rounds"
header
for entry in "${targets[@]}"; do
    IFS='|' read -r name url echoes <<<"$entry"
    cells=()
    for column in "${columns[@]}"; do
        if [[ -z "${rps[$name|$column]:-}" ]]; then
            cells+=("-" "-")
        else
            cells+=("$(mean "${rps[$name|$column]}")" "$(mean "${p50[$name|$column]}")/$(mean "${p99[$name|$column]}")")
        fi
    done
    printf "$row_format" "$name" "${cells[@]}" "$(tr ',' '\n' <<<"${failed[$name]:-no}" | sort -u | paste -sd,)"
done

echo
echo "CPU per request, microseconds: the machine's CPU time on everything but wrk during a run, divided"
echo "by the requests answered (scripts/bench/wrk.sh); mean of the $rounds rounds"
cpu_format="| %-22s | %7s | %7s | %7s | %7s |\n"
printf "$cpu_format" target "c=1" "c=16" "c=64" "POST"
printf "|%s|%s|%s|%s|%s|\n" "------------------------" "---------" "---------" "---------" "---------"
for entry in "${targets[@]}"; do
    IFS='|' read -r name url echoes <<<"$entry"
    cells=()
    for column in "${columns[@]}"; do
        cells+=("$([[ -n "${cpu[$name|$column]:-}" ]] && awk -v s="${cpu[$name|$column]}" -v n="$rounds" 'BEGIN { printf "%.1f", s / n }' || echo -)")
    done
    printf "$cpu_format" "$name" "${cells[@]}"
done

echo
# a/b of the sums over the rounds; `better` picks the larger of two throughputs (the smaller p50).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
better() { awk -v a="$1" -v b="$2" -v m="$3" 'BEGIN { print (m == "min" ? (a < b ? a : b) : (a > b ? a : b)) }'; }
peer() { # column kind(1w|2w) max|min array-name
    local -n values=$4
    better "${values[uvicorn $2|$1]}" "${values[granian $2|$1]}" "$3"
}
echo "issue 15, aether / the better of uvicorn and granian (sums over both rounds):"
echo "  max_instances 1 vs 1 worker:  c=16 req/s $(ratio "${rps[aether sdk python|16]}" "$(peer 16 1w max rps)")," \
    "c=64 req/s $(ratio "${rps[aether sdk python|64]}" "$(peer 64 1w max rps)") (goal >= 1.5);" \
    "c=1 p50 $(ratio "${p50[aether sdk python|1]}" "$(peer 1 1w min p50)") (goal <= 1.0)"
echo "  max_instances 2 vs 2 workers: c=16 req/s $(ratio "${rps[aether sdk python x2|16]}" "$(peer 16 2w max rps)")," \
    "c=64 req/s $(ratio "${rps[aether sdk python x2|64]}" "$(peer 64 2w max rps)") (goal >= 1.5)"
echo "  64 KiB POST echo req/s: max_instances 1 vs 1 worker $(ratio "${rps[aether sdk python|post]}" "$(peer post 1w max rps)")," \
    "max_instances 2 vs 2 workers $(ratio "${rps[aether sdk python x2|post]}" "$(peer post 2w max rps)") (goal >= 1.0)"
echo "  CPU per request, aether / the better of uvicorn and granian: max_instances 1 vs 1 worker c=16" \
    "$(ratio "${cpu[aether sdk python|16]}" "$(peer 16 1w min cpu)"), c=64 $(ratio "${cpu[aether sdk python|64]}" "$(peer 64 1w min cpu)")" \
    "(1.5x their req/s on the same CPUs needs <= 0.67)"
echo "  Swift SDK / hummingbird: c=16 req/s $(ratio "${rps[aether sdk swift|16]}" "${rps[hummingbird|16]}") (goal >= 0.7)," \
    "c=64 req/s $(ratio "${rps[aether sdk swift|64]}" "${rps[hummingbird|64]}")"
for language in python swift; do
    echo "A/B sdk $language, aether (confined) / $other: c=1 req/s" \
        "$(ratio "${rps[aether sdk $language|1]}" "${rps[$other sdk $language|1]}"), p50" \
        "$(ratio "${p50[aether sdk $language|1]}" "${p50[$other sdk $language|1]}"); c=16 req/s" \
        "$(ratio "${rps[aether sdk $language|16]}" "${rps[$other sdk $language|16]}"); c=64 req/s" \
        "$(ratio "${rps[aether sdk $language|64]}" "${rps[$other sdk $language|64]}")"
done
echo "c=1 p50: aether sdk python / nginx->python = $(ratio "${p50[aether sdk python|1]}" "${p50[nginx -> python|1]}");" \
    "aether sdk python / python http.server = $(ratio "${p50[aether sdk python|1]}" "${p50[python http.server|1]}")"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
.build/release/aether stats --socket "$work/aether.sock"
echo
echo "CSV: $csv; plots:"
"$plot_python" scripts/bench/plot.py wrk "$csv" --title "aether and its peers"
