#!/usr/bin/env bash
# The same FastAPI app (examples/fastapi-app/app.py) behind `aether up` (`asgi: app`: the Python
# SDK's ASGI adapter fed from the shared-memory ring, no HTTP server in the Python process) and
# under uvicorn (--http httptools --loop uvloop), one Python process each, side by side in ONE
# run (wrk -t1, loopback), issue 17:
#
#   aether fastapi         max_instances: 1, min_warm: 1, concurrency: 1, confined (the default)
#   uvicorn fastapi        uvicorn app:app --workers 1
#
#   scripts/bench-fastapi.sh [seconds per run, default 5]
#   scripts/bench-fastapi.sh --prepare   # only build and install (needs PyPI the first time)
#
# Both run with the same virtualenv, .build-bench/fastapi-venv (the pins below, reused while they
# are installed), given to aether as `python:`. Each target answers GET /items/7?q=hi at 1, 16 and
# 64 connections and POST /items (a JSON body FastAPI validates with pydantic) at 16, twice: the
# targets alternate, round 2 in the reverse order. Printed: each round, the mean of the two, and
# aether / uvicorn. Into AETHER_BENCH_OUT (default bench-results/fastapi): the printed tables
# (tables.md), every measurement as CSV (fastapi.csv, the columns of bench-gateway.sh's
# gateway.csv) and their plots, fastapi-rps.png and fastapi-p50.png (scripts/bench/plot.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
prepare_only=no
[[ "${1:-}" == --prepare ]] && prepare_only=yes && shift
duration="${1:-5}"
rounds=2
# What was tested on Debian 12 with Python 3.11 (2026-12); FastAPI's as the example pins it.
pins=(fastapi==0.165.0 uvicorn==0.54.0 httptools==0.9.0 uvloop==0.23.0 h11==0.16.0 click==8.5.1)

command -v wrk >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
}
swift build -c release --product aether >/dev/null
swift build -c release --product aether-sandbox >/dev/null

venv=.build-bench/fastapi-venv
venv_ready() {
    [[ -x "$venv/bin/python" ]] || return 1
    local installed
    installed=$("$venv/bin/python" -m pip freeze 2>/dev/null) || return 1
    for pin in "${pins[@]}"; do grep -qixF "$pin" <<<"$installed" || return 1; done
}
if ! venv_ready; then
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}" || {
        echo "cannot install ${pins[*]} into $venv (in a network namespace? run --prepare outside it first)" >&2
        exit 1
    }
fi
# A confined handler runs as its function's own uid: the virtualenv must be readable by it.
chmod -R a+rX "$venv" .build-bench
# matplotlib for the plots at the end (made once; found without network after that).
plot_python=$(scripts/bench/plot-venv.sh)
[[ "$prepare_only" == yes ]] && exit 0

out="${AETHER_BENCH_OUT:-bench-results/fastapi}"
mkdir -p "$out"
rm -f "$out"/fastapi.csv "$out"/fastapi-*.png
csv="$out/fastapi.csv"
echo "round,target,request,connections,rps,p50_us,p99_us,errors,cpu_us" >"$csv"
# Everything printed from here on goes to tables.md too.
exec > >(tee "$out/tables.md")

work=$(mktemp -d /tmp/aether-bench-fastapi-XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    [[ -S "$work/aether.sock" ]] && .build/release/aether down --socket "$work/aether.sock" >/dev/null 2>&1 || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

app_dir=$(pwd)/examples/fastapi-app
cat >"$work/aether.yaml" <<YAML
orchestrator:
  control_socket: $work/aether.sock
  state_dir: $work/state
  python: $(pwd)/$venv/bin/python
functions:
  - id: bench-fastapi
    trigger_port: 18301
    handler_path: $app_dir/app.py
    asgi: app
    max_instances: 1
    min_warm: 1
    concurrency: 1
    max_queue: 1024
YAML
.build/release/aether up -c "$work/aether.yaml" >"$work/aether.log" 2>&1 &
pids+=($!)
"$venv/bin/uvicorn" app:app --app-dir "$app_dir" --host 127.0.0.1 --port 18302 --workers 1 \
    --http httptools --loop uvloop --no-access-log --log-level warning 2>"$work/uvicorn.log" &
pids+=($!)

targets=("aether fastapi|http://127.0.0.1:18301" "uvicorn fastapi|http://127.0.0.1:18302")
for entry in "${targets[@]}"; do
    IFS='|' read -r name url <<<"$entry"
    for attempt in $(seq 150); do
        curl -sf "$url/items/7?q=hi" | grep -q '"id":7' && break
        if ((attempt == 150)); then
            echo "$name ($url) does not answer; logs in $work:" >&2
            tail -n 20 "$work"/*.log >&2
            exit 1
        fi
        sleep 0.2
    done
done

cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"name": "pen", "price": 1.5, "tags": ["office", "blue"]}'
wrk.headers["Content-Type"] = "application/json"
LUA

source scripts/bench/wrk.sh
for entry in "${targets[@]}"; do # one second of load first: caches warm, instances up
    IFS='|' read -r name url <<<"$entry"
    wrk -t1 -c16 -d1s "$url/items/7?q=hi" >/dev/null 2>&1 || true
done

columns=(1 16 64 post)
row_format="| %-16s | %9s | %13s | %9s | %13s | %9s | %13s | %9s | %13s | %6s |\n"
header() {
    printf "$row_format" target "c=1 req/s" "p50/p99 us" "c=16 req/s" "p50/p99 us" "c=64 req/s" "p50/p99 us" \
        "POST req/s" "p50/p99 us" errors
    printf "|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n" "------------------" "-----------" "---------------" \
        "-----------" "---------------" "-----------" "---------------" "-----------" "---------------" "--------"
}
declare -A rps p50 p99 failed
add() {
    local -n sums=$1
    sums["$2"]=$(awk -v s="${sums[$2]:-0}" -v v="$3" 'BEGIN { print s + v }')
}
echo "machine: $(nproc) cores, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t1, ${duration} s per run, 127.0.0.1; GET /items/7?q=hi; POST /items (JSON, 16 connections)"
echo "$("$venv/bin/python" --version), ${pins[*]}"
for round in $(seq "$rounds"); do
    order=("${targets[@]}")
    ((round % 2 == 0)) && order=("${targets[1]}" "${targets[0]}")
    echo
    echo "round $round of $rounds"
    header
    for entry in "${order[@]}"; do
        IFS='|' read -r name url <<<"$entry"
        cells=()
        errors=no
        for column in "${columns[@]}"; do
            if [[ "$column" == post ]]; then
                read -r r a b e u <<<"$(run "$url/items" 16 -s "$work/post.lua")"
                echo "$round,\"$name\",POST,16,$r,$a,$b,$e,$u" >>"$csv"
            else
                read -r r a b e u <<<"$(run "$url/items/7?q=hi" "$column")"
                echo "$round,\"$name\",GET,$column,$r,$a,$b,$e,$u" >>"$csv"
            fi
            add rps "$name|$column" "$r"
            add p50 "$name|$column" "$a"
            add p99 "$name|$column" "$b"
            if [[ "$e" != 0 ]]; then
                errors=$([[ "$errors" == no ]] && echo "$column" || echo "$errors,$column")
                failed["$name"]=$([[ -z "${failed[$name]:-}" ]] && echo "$column" || echo "${failed[$name]},$column")
            fi
            cells+=("$r" "$a/$b")
        done
        printf "$row_format" "$name" "${cells[@]}" "$errors"
    done
done

mean() { awk -v s="$1" -v n="$rounds" 'BEGIN { printf "%d", s / n + 0.5 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
echo
echo "mean of the $rounds rounds"
header
for entry in "${targets[@]}"; do
    IFS='|' read -r name url <<<"$entry"
    cells=()
    for column in "${columns[@]}"; do
        cells+=("$(mean "${rps[$name|$column]}")" "$(mean "${p50[$name|$column]}")/$(mean "${p99[$name|$column]}")")
    done
    printf "$row_format" "$name" "${cells[@]}" "$(tr ',' '\n' <<<"${failed[$name]:-no}" | sort -u | paste -sd,)"
done
echo
echo "aether / uvicorn, the same FastAPI app, one Python process each (sums over both rounds):"
for column in "${columns[@]}"; do
    echo "  ${column}: req/s $(ratio "${rps[aether fastapi|$column]}" "${rps[uvicorn fastapi|$column]}")," \
        "p50 $(ratio "${p50[aether fastapi|$column]}" "${p50[uvicorn fastapi|$column]}")"
done
echo
echo "CSV: $csv; plots:"
"$plot_python" scripts/bench/plot.py wrk "$csv" --title "FastAPI app"
