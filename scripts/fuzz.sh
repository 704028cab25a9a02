#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of what reaches the orchestrator from outside: configuration
# files (fuzz-config), ring words and records a handler writes (fuzz-ring), invocation messages
# (fuzz-invocation). See Fuzz/README.md.
#
#   scripts/fuzz.sh [SECONDS] [--merge] [TARGET...]
#
# Builds Fuzz/ (its own package, scratch folder .build-fuzz) with the address sanitizer and
# libFuzzer's coverage instrumentation, then runs each target for SECONDS (default 60) on its
# committed corpus Fuzz/Corpus/<target>/. Inputs that reach new code go to .build-fuzz/corpus/
# <target>/ and never into the checkout, unless --merge: then Fuzz/Corpus/<target>/ is rebuilt as
# its seeds plus the smallest set of committed and new inputs that covers as much (libFuzzer
# -merge=1), to be committed. A crash, a timeout (an input taking over 10 s) or an out-of-memory
# fails that target (the others still run) and the script's exit status is 1; the input is in
# .build-fuzz/artifacts/, and running the target on it replays it:
# .build-fuzz/release/fuzz-ring .build-fuzz/artifacts/ring-crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH

seconds=60
merge=false
targets=()
for argument in "$@"; do
    case "$argument" in
        --merge) merge=true ;;
        [0-9]*) seconds=$argument ;;
        config | ring | invocation) targets+=("$argument") ;;
        *)
            echo "usage: scripts/fuzz.sh [SECONDS] [--merge] [config|ring|invocation ...]" >&2
            exit 2
            ;;
    esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(config ring invocation)

scratch=.build-fuzz
# Every module (the code under test, Yams' libyaml) gets ASan and coverage; the three programs also
# link libFuzzer (Fuzz/Package.swift). -sanitize=fuzzer for every module would put libFuzzer's main
# into the build tools SwiftPM makes for the root package's plugins, which then fail to link.
echo "fuzz: building Fuzz/ into $scratch (release, address sanitizer, libFuzzer coverage)"
started=$SECONDS
# (The linker's notes about ASan's __asan_extra_spill_area are noise; a failed build stops here,
# rather than running whatever an earlier build left in the scratch folder.)
if ! swift build --package-path Fuzz --scratch-path "$scratch" -c release \
    -Xswiftc -sanitize=address \
    -Xswiftc -sanitize-coverage=edge,trace-cmp,indirect-calls,inline-8bit-counters,pc-table \
    -Xcc -fsanitize=fuzzer-no-link,address 2>&1 |
    { grep -v "Cannot export local symbol '__asan_extra_spill_area'" || true; }; then
    echo "fuzz: building Fuzz/ failed (above)" >&2
    exit 1
fi
bin=$(swift build --package-path Fuzz --scratch-path "$scratch" -c release --show-bin-path)
for target in "${targets[@]}"; do
    [[ -x "$bin/fuzz-$target" ]] || {
        echo "fuzz: the build did not produce fuzz-$target" >&2
        exit 1
    }
done
echo "fuzz: built in $((SECONDS - started)) s"

# The Swift runtime's backtracer would catch the crash first and, under ASan, can hang; libFuzzer
# prints the stack and saves the input itself.
export SWIFT_BACKTRACE=enable=no
mkdir -p "$scratch/artifacts"
status=0
for target in "${targets[@]}"; do
    corpus="Fuzz/Corpus/$target"
    found="$scratch/corpus/$target"
    mkdir -p "$corpus" "$found"
    log="$scratch/fuzz-$target.log"
    echo "fuzz: $target for $seconds s (corpus $corpus, new inputs in $found)"
    # The first folder receives new inputs; the committed corpus is only read.
    if ! "$bin/fuzz-$target" "$found" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$scratch/artifacts/$target-" >"$log" 2>&1; then
        grep -E "ERROR|SUMMARY|Test unit written|runtime failure|Fatal error|#[0-9]+ 0x" "$log" | head -40 >&2
        echo "fuzz: $target FAILED (full log: $log)" >&2
        status=1
        continue
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    coverage=$(grep -Eo "cov: [0-9]+ ft: [0-9]+" "$log" | tail -1)
    echo "fuzz: $target ok: $runs executions, $coverage, $(find "$found" -type f | wc -l) inputs in $found"
    if $merge; then
        # Minimized afresh: the seeds, then from the committed corpus and the new inputs only
        # those that add coverage (libFuzzer -merge=1 prefers the smaller of two equal inputs).
        before=$(find "$corpus" -type f | wc -l)
        merged="$scratch/merged/$target"
        rm -rf "$merged"
        mkdir -p "$merged"
        find "$corpus" -maxdepth 1 -type f -name 'seed-*' -exec cp {} "$merged/" \;
        "$bin/fuzz-$target" -merge=1 "$merged" "$corpus" "$found" >"$scratch/merge-$target.log" 2>&1
        find "$corpus" -maxdepth 1 -type f ! -name 'seed-*' -delete
        cp "$merged"/* "$corpus/"
        echo "fuzz: $target corpus $before -> $(find "$corpus" -type f | wc -l) inputs" \
            "($(du -sk "$corpus" | cut -f1) KiB)"
    fi
done
exit $status
