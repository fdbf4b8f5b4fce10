#!/usr/bin/env bash
# The README main job exactly as written, N times on a cold program cache (a fresh
# TFN_MD_CACHE each) and N times warm (one shared cache); counts the runs that fail.
#
#   benchmarks/main_job_repeat.sh [N]              # default N = 10
#   MALLOC_CHECK_=3 LD_PRELOAD=libc_malloc_debug.so.0 benchmarks/main_job_repeat.sh
#
# (glibc >= 2.34 honours MALLOC_CHECK_ only with its malloc debug library preloaded.)
set -u
n=${1:-10}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
failed=0
run() {  # $1: label, $2: cache folder
    local start=$(date +%s%N) rc
    TFN_MD_CACHE=$2 tfn-md md --potential ethanol-gfn2 --molecule CH3CH2OH --steps 2000 \
        --temperature 300 -o ethanol.traj > out.log 2>&1
    rc=$?
    local speed=$(grep -o '"steps_per_second": [0-9.]*' out.log | grep -o '[0-9.]*$')
    printf '%s: exit status %d, %d ms, %s steps/s\n' "$1" "$rc" \
        $(( ($(date +%s%N) - start) / 1000000 )) "${speed:-?}"
    [ "$rc" -eq 0 ] || { failed=$((failed + 1)); tail -3 out.log; }
}
for k in $(seq "$n"); do run "cold $k" "$work/cold-$k"; done
for k in $(seq "$n"); do run "warm $k" "$work/cold-1"; done
echo "failed runs: $failed of $((2 * n))"
[ "$failed" -eq 0 ]
