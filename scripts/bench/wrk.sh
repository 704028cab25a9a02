# wrk helpers the HTTP benchmarks share (sourced; they set `duration`, seconds per run).

# wrk prints latency with units; normalise to microseconds.
to_us() {
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'
}

# Jiffies every CPU spent busy so far (user, nice, system, irq, softirq; not idle, iowait or steal).
busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
clock_ticks=$(getconf CLK_TCK)

# run URL CONNECTIONS [wrk args] -> "rps p50_us p99_us errors cpu_us" (errors: 0, or yes when wrk
# saw non-2xx answers or socket errors; cpu_us: the CPU time the machine spent on everything but
# wrk during the run, per request, in microseconds). cpu_us is what one answer costs the server
# (its processes and the kernel's work for them), comparable across servers whether or not they
# saturated the CPUs, and much steadier from run to run than req/s on a shared VM; it counts
# whatever else runs meanwhile, so run on an otherwise idle machine with one target loaded at a time.
run() {
    local out rps p50 p99 errors before after requests wrk_cpu cpu
    before=$(busy_ticks)
    # wrk's own CPU time, from its rusage as a child of this small wrapper.
    out=$(python3 -c '
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
sys.stdout.write(done.stdout)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"wrk-cpu-seconds {usage.ru_utime + usage.ru_stime:.4f}")
' wrk -t1 -c"$2" -d"${duration}s" --latency "${@:3}" "$1" 2>&1)
    after=$(busy_ticks)
    rps=$(awk '/Requests\/sec/ { printf "%d", $2 }' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    errors=$(awk '/Non-2xx|Socket errors/ { e = e $0 } END { print (e == "" ? "0" : "yes") }' <<<"$out")
    requests=$(awk '/ requests in / { print $1 }' <<<"$out")
    wrk_cpu=$(awk '/^wrk-cpu-seconds/ { print $2 }' <<<"$out")
    cpu=$(awk -v t="$((after - before))" -v hz="$clock_ticks" -v w="${wrk_cpu:-0}" -v n="${requests:-0}" \
        'BEGIN { v = n > 0 ? (t / hz - w) * 1000000 / n : 0; printf "%.1f", v < 0 ? 0 : v }')
    echo "${rps:-0} ${p50:-0} ${p99:-0} $errors $cpu"
}
