#!/usr/bin/env bash
# run.sh — runs every test program given, each with a time limit, and sums their closing lines
# ("N passed, N failed") into one. A program that crashes or prints no closing line counts as
# one failure. Usage: tests/run.sh [--wrap "valgrind ..."] PROGRAM...
# One case of a C test program runs by its name: build/tests/test_e2e_pipeline train-3 (the names:
# --list; see tests/README.md).
set -u
wrap=""
if [ "${1:-}" = "--wrap" ]; then wrap=$2; shift 2; fi
passed=0 failed=0
for prog in "$@"; do
    name=$(basename "$prog")
    log=$(mktemp)
    start=$EPOCHREALTIME
    timeout 600 $wrap "$prog" >"$log" 2>&1
    rc=$?
    secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    if [ -n "$line" ]; then
        p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
    else
        p=0 f=1
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p)) failed=$((failed + f))
    if [ "$f" -eq 0 ]; then
        printf 'ok    %-28s %4d checks  %6ss\n' "$name" "$p" "$secs"
    else
        printf 'FAIL  %-28s exit %d, %d failed  %6ss\n' "$name" "$rc" "$f" "$secs"
        sed 's/^/      | /' "$log" | tail -n 40
    fi
    rm -f "$log"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
