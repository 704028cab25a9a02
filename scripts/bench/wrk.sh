# wrk helpers the HTTP benchmarks share (sourced; they set `duration`, seconds per run).

# wrk prints latency with units; normalise to microseconds.
to_us() {
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'
}

# run URL CONNECTIONS [wrk args] -> "rps p50_us p99_us errors" (errors: 0, or yes when wrk saw
# non-2xx answers or socket errors)
run() {
    local out rps p50 p99 errors
    out=$(wrk -t1 -c"$2" -d"${duration}s" --latency "${@:3}" "$1" 2>&1)
    rps=$(awk '/Requests\/sec/ { printf "%d", $2 }' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    errors=$(awk '/Non-2xx|Socket errors/ { e = e $0 } END { print (e == "" ? "0" : "yes") }' <<<"$out")
    echo "${rps:-0} ${p50:-0} ${p99:-0} $errors"
}
