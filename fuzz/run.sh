#!/usr/bin/env bash
# Runs the fuzz targets (cargo-fuzz on the nightly toolchain), one at a time.
#
#   fuzz/run.sh short [TARGET...]      every target for FUZZ_SECONDS (4) with the committed
#                                      corpus, unoptimised build (quick to build): what CI
#                                      runs; fails on any crash
#   fuzz/run.sh long [RUNS] [TARGET...]
#                                      release build; each target to RUNS executions
#                                      (10,000,000) or FUZZ_MAX_TIME seconds (1800),
#                                      whichever comes first; fails on any crash
#
# Both print per target: executions, exec/s, time, corpus size, crashes. The committed
# seeds are fuzz/corpus/<target>/ (only read); what the fuzzer adds goes to
# fuzz/corpus-work/<target>/ (ignored by git), crashes and the run's log to
# fuzz/artifacts/<target>/. Reproduce a crash:
#   cargo +nightly fuzz run -s none -a TARGET fuzz/artifacts/TARGET/crash-…
# Safe Rust only: the targets are built without a sanitizer (-s none), with debug
# assertions and overflow checks (-a), like the CI profile.
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-short}
shift || true
runs=10000000
if [[ $mode == long && ${1:-} =~ ^[0-9]+$ ]]; then
    runs=$1
    shift
fi
case $mode in
    short)
        profile=(-D)
        dir=debug
        limits=(-max_total_time="${FUZZ_SECONDS:-4}")
        ;;
    long)
        profile=(-O)
        dir=release
        limits=(-runs="$runs" -max_total_time="${FUZZ_MAX_TIME:-1800}")
        ;;
    *)
        echo "usage: fuzz/run.sh short|long [RUNS] [TARGET...]" >&2
        exit 2
        ;;
esac

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz/run.sh: cargo-fuzz needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi

started=$(date +%s)
echo "== building the fuzz targets ($dir)"
cargo +nightly fuzz build "${profile[@]}" -s none -a
echo "   built in $(($(date +%s) - started)) s"
bin="target/$(rustc -vV | sed -n 's/^host: //p')/$dir"

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

failed=()
report=()
for t in "${targets[@]}"; do
    mkdir -p "corpus-work/$t" "corpus/$t" "artifacts/$t"
    log="artifacts/$t/last-run.log"
    t0=$(date +%s.%N)
    status=0
    "$bin/$t" -artifact_prefix="artifacts/$t/" "${limits[@]}" -timeout=10 \
        -print_final_stats=1 "corpus-work/$t" "corpus/$t" >"$log" 2>&1 || status=$?
    t1=$(date +%s.%N)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "corpus-work/$t" "corpus/$t" -type f | wc -l)
    crashes=$(find "artifacts/$t" -type f ! -name last-run.log -newermt "@${t0%.*}" | wc -l)
    line=$(printf '%-28s %12s execs %9s exec/s %7.0f s  corpus %5d  crashes %d' \
        "$t" "${execs:-?}" "${rate:-?}" "$(awk "BEGIN { print $t1 - $t0 }")" "$corpus" "$crashes")
    echo "$line"
    report+=("$line")
    if [[ $status -ne 0 || $crashes -ne 0 ]]; then
        failed+=("$t")
        grep -E 'panicked at|^SUMMARY|Test unit written to' "$log" | sed 's/^/    /' || true
    fi
done

echo "== $mode run: ${#targets[@]} targets in $(($(date +%s) - started)) s (build included)"
printf '%s\n' "${report[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz/run.sh: crashes in ${failed[*]} (logs: fuzz/artifacts/<target>/last-run.log)" >&2
    exit 1
fi
