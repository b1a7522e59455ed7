#!/usr/bin/env bash
# test_fuzz_seeds.sh — every libFuzzer harness of `make fuzz` (tests/fuzz_NAME.c) starts from a
# seed corpus our own writers made (tests/NAME_seeds.c, or test_torch --seeds), and replays it
# as a plain program (tests/replay.c) without failing: a harness's checks abort, and `make
# sanitize` runs them under ASan and UBSan. The safetensors seeds open as files. Ends with
# "N passed, N failed".
set -u
bin=$(cd "${SL_BIN:-bin}" && pwd)
build=$(cd "${SL_BUILD:-build}" && pwd)
tmp=$(mktemp -d /tmp/sl-test-fuzz-seeds-XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
. "$(dirname "$0")/check.sh"

check "test_torch writes the pickle and PyTorch file seeds" status_is 0 "$build/tests/test_torch" --seeds "$tmp"
for harness in tests/fuzz_*.c; do
    name=$(basename "$harness" .c)
    seeds="$tmp/seeds-$name" writer="tests/${name#fuzz_}_seeds.c"
    mkdir -p "$seeds"
    if [ -f "$writer" ]; then
        check "$(basename "$writer" .c) writes $name's seeds" status_is 0 "$build/tests/$(basename "$writer" .c)" "$seeds"
    fi
    n=$(find "$seeds" -type f | wc -l)
    check "$name has a seed corpus ($n files, at least 3)" [ "$n" -ge 3 ]
    check "$name replays its $n seeds" status_is 0 "$build/tests/$name" "$seeds"/*
done
for f in "$tmp"/seeds-fuzz_safetensors/*; do
    check "the safetensors seed $(basename "$f") opens" status_is 0 "$bin/zmq-splitlearn-info" "$f"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
