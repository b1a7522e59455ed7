#!/usr/bin/env bash
# test_weights.sh — the weight formats and the F16 KV cache from the command line: run --weights
# and --kv against the references of ../shared/fixtures within the bound of docs/WEIGHTS.md
# ("Accuracy of a whole model"), bad values refused, merge of q8_0 parts saying what it does, and
# pipelines of nodes on split --dtype parts with kv = f16 answering send exactly as run does.
# Ends with "N passed, N failed".
set -u
bin=$(cd "${SL_BIN:-bin}" && pwd)
fixtures=${SL_FIXTURES:-../shared/fixtures}
tmp=$(mktemp -d /tmp/sl-test-weights-XXXXXX)
launcher=""
trap '[ -n "$launcher" ] && kill $launcher 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
. "$(dirname "$0")/check.sh"

# Ports as tests/test_cli.sh takes them (tests/check.h), past the span's first few.
port_const() { sed -n "s/^#define $1 \([0-9]*\)$/\1/p" "$(dirname "$0")/check.h"; }
port=$((${SL_TEST_PORT_BASE:-$(port_const CHECK_PORT_BASE)} + $$ % $(port_const CHECK_PORT_SLOTS) * $(port_const CHECK_PORT_SPAN) + 8))

# refs MODEL PROMPT KEY: prompt PROMPT's (from 0) KEY array (ids, greedy, margins) of refs.json, one a line.
refs() {
    awk -v want="$2" -v key="$3" '
        /"ids": \[/ { p++ }
        /"[a-z_0-9]+": \[/ { k = $1; gsub(/[":]/, "", k); next }
        /\]/ { k = ""; next }
        k == key && p - 1 == want { gsub(/[ ,]/, ""); print }' "$fixtures/$1/refs.json"
}
# floats FILE: the float32 values of a file of one tensor (run --logits), one a line.
floats() {
    local header
    header=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    od -An -v -tf4 -j $((8 + header)) "$1" | tr -s ' ' '\n' | sed '/^$/d'
}
max_abs() { floats "$1" | awk '{ v = $1 < 0 ? -$1 : $1; if (v > m) m = v } END { printf "%.9g", m }'; }
max_diff() { # max_diff FILE FILE: the largest |a - b| of their values
    paste <(floats "$1") <(floats "$2") |
        awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d } END { printf "%.9g", m }'
}
# The bound of docs/WEIGHTS.md on the logits: 1e-5 + (n eps + 2 L 2^-11 with an F16 cache) S, n = 4 L + 2
# matrices; and 1e-5 more here, the F32 run it is compared with being that close to the reference.
bound() { # bound FORMAT KV N_LAYER SCALE
    awk -v f="$1" -v kv="$2" -v L="$3" -v S="$4" 'BEGIN {
        eps["f32"] = 0; eps["f16"] = 2^-11; eps["bf16"] = 2^-8; eps["q8_0"] = 2 / 254 + 2^-11
        printf "%.9g", 2e-5 + ((4 * L + 2) * eps[f] + (kv == "f16" ? 2 * L * 2^-11 : 0)) * S }'
}
# compared MARGIN GOT PROMPT MODEL: the generated ids (GOT, one line) equal the reference's greedy
# up to the first step whose margin is below MARGIN; prints how many steps were compared.
compared() {
    paste <(tr ' ' '\n' <<<"$2") <(refs "$4" "$3" greedy) <(refs "$4" "$3" margins) |
        awk -v min="$1" '$3 < min || $1 == "" { exit } $1 != $2 { bad = 1; exit } { n++ }
                         END { print (bad ? "differ at step " n + 0 : n + 0) }'
}
greater() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }

# run --weights and --kv on tiny-b's prompts: the logits within the bound of the F32 run's and not
# equal to them (the option took effect); the greedy ids the reference's where the margins allow
# (2 B; and, decoding as accurately as the prompt, 8 times the prompt's error)
n_layer=5 steps=20
for p in 0 1 2; do
    ids=$(refs tiny-b $p ids | paste -sd,)
    "$bin/zmq-splitlearn-run" "$fixtures/tiny-b" --ids "$ids" --max-new-tokens $steps --ignore-eos --print-ids --quiet \
        --logits "$tmp/f32-$p.st" >/dev/null
    scale=$(max_abs "$tmp/f32-$p.st")
    for opts in "--weights f16" "--weights bf16" "--weights q8_0" "--kv f16" "--weights q8_0 --kv f16"; do
        format=$(sed -n 's/.*--weights \([a-z0-9_]*\).*/\1/p' <<<"$opts") kv=$(sed -n 's/.*--kv \([a-z0-9]*\).*/\1/p' <<<"$opts")
        name=$(tr -d ' -' <<<"$opts")
        got=$("$bin/zmq-splitlearn-run" "$fixtures/tiny-b" --ids "$ids" --max-new-tokens $steps --ignore-eos --print-ids \
            --quiet $opts --logits "$tmp/$name-$p.st")
        B=$(bound "${format:-f32}" "${kv:-f32}" $n_layer "$scale")
        err=$(max_diff "$tmp/$name-$p.st" "$tmp/f32-$p.st")
        check "tiny-b p$p run $opts: logits $err from F32's, within $B" awk -v e="$err" -v b="$B" 'BEGIN { exit !(e <= b) }'
        check "tiny-b p$p run $opts: ... and not F32's" greater "$err" 0
        margin=$(awk -v b="$B" 'BEGIN { print (2 * b > 1e-3 ? 2 * b : 1e-3) }')
        near=$(awk -v e="$err" 'BEGIN { print (8 * e > 1e-3 ? 8 * e : 1e-3) }')
        bounded=$(compared "$margin" "$got" $p tiny-b) observed=$(compared "$near" "$got" $p tiny-b)
        check "tiny-b p$p run $opts: greedy ids the reference's ($bounded steps within the bound, $observed within 8x the error)" \
            test "${bounded%% *}" != differ -a "${observed%% *}" != differ
        echo "tiny-b p$p run $opts: logits $err (bound $B), greedy steps compared $bounded (bound), $observed (8x error)"
    done
done

# tiny-a is stored F16: --weights f16 computes on exactly its weights, so F32's rounding apart
ids=$(refs tiny-a 1 ids | paste -sd,)
"$bin/zmq-splitlearn-run" "$fixtures/tiny-a" --ids "$ids" --max-new-tokens 20 --ignore-eos --quiet --logits "$tmp/a32.st"
got=$("$bin/zmq-splitlearn-run" "$fixtures/tiny-a" --ids "$ids" --max-new-tokens 20 --ignore-eos --print-ids --quiet \
    --weights f16 --logits "$tmp/a16.st")
err=$(max_diff "$tmp/a16.st" "$tmp/a32.st")
check "tiny-a run --weights f16: the F32 run's logits within rounding ($err)" awk -v e="$err" 'BEGIN { exit !(e <= 2e-5) }'
steps=$(compared 1e-3 "$got" 1 tiny-a)
check "tiny-a run --weights f16: greedy the reference's ($steps steps)" greater "${steps%% *}" 5

# bad values: exit 2, one line naming the option and the value
for bad in "--weights q4_k" "--weights fp16" "--kv bf16" "--kv q8_0"; do
    "$bin/zmq-splitlearn-run" "$fixtures/tiny-b" --ids 1 $bad 2>"$tmp/bad.err" >/dev/null
    status=$?
    check "run $bad: exit 2 (got $status)" test $status -eq 2
    check "run $bad: one line says what is wrong" test "$(grep -c -- "${bad%% *}: '.*' is not" "$tmp/bad.err")" -eq 1
done
"$bin/zmq-splitlearn-split" "$fixtures/tiny-b" --splits 2 --dtype q4_k -o "$tmp/none" 2>"$tmp/bad.err" >/dev/null
check "split --dtype q4_k: exit 2 (got $?), one line" test $? -eq 2 -a "$(grep -c "dtype: 'q4_k' is not" "$tmp/bad.err")" -eq 1

# merge of q8_0 parts says what it does
"$bin/zmq-splitlearn-split" "$fixtures/tiny-b" --splits 2 --dtype q8_0 -o "$tmp/q8" >/dev/null
"$bin/zmq-splitlearn-merge" "$tmp/q8" -o "$tmp/q8-merged" 2>"$tmp/merge.err" >/dev/null
check "merge of q8_0 parts: exit 0, one line saying they are written dequantised to f32" \
    test $? -eq 0 -a "$(grep -c 'q8_0 weights: writing them dequantised to f32' "$tmp/merge.err")" -eq 1
check "... and the merged model runs" status_is 0 "$bin/zmq-splitlearn-run" "$tmp/q8-merged" --ids 1,2 --max-new-tokens 2 --quiet

# pipelines on split --dtype parts with an F16 cache: send answers what run --weights --kv f16 does,
# ids and logits byte for byte (the same kernels in the same order). kv = f16 for the whole
# pipeline (q8_0), or node by node (f16).
ids=$(refs tiny-b 2 ids | paste -sd,)
for format in q8_0 f16; do
    "$bin/zmq-splitlearn-split" "$fixtures/tiny-b" --splits 2,4 --dtype $format -o "$tmp/parts-$format" \
        --topology "$tmp/$format.ini" --port $port >/dev/null
    if [ $format = q8_0 ]; then
        sed -i 's/^\[pipeline\]$/[pipeline]\nkv = f16/' "$tmp/$format.ini"
    else
        sed -i 's/^\(\[node\.[a-z0-9]*\]\)$/\1\nkv = f16/' "$tmp/$format.ini"
    fi
    check "$format topology: kv = f16 written" grep -q '^kv = f16$' "$tmp/$format.ini"
    rm -f "$tmp/ready"
    "$bin/zmq-splitlearn-launch" "$tmp/$format.ini" --ready-file "$tmp/ready" >"$tmp/launch-$format.log" 2>&1 &
    launcher=$!
    for _ in $(seq 300); do [ -f "$tmp/ready" ] && break; sleep 0.05; done
    check "$format pipeline ready" test -f "$tmp/ready"
    check "$format pipeline: every node says its format and its F16 cache" \
        test "$(grep -c "parameters in $format (.* kernels, kv f16)" "$tmp/launch-$format.log")" -eq 3
    want=$("$bin/zmq-splitlearn-run" "$fixtures/tiny-b" --ids "$ids" --max-new-tokens 16 --ignore-eos --print-ids --quiet \
        --weights $format --kv f16 --logits "$tmp/run-$format.st")
    got=$("$bin/zmq-splitlearn-send" "$tmp/$format.ini" --ids "$ids" --max-new-tokens 16 --ignore-eos --print-ids --quiet \
        --logits "$tmp/send-$format.st")
    check "$format parts, kv = f16: send's ids are run --weights $format --kv f16's ('$got')" \
        test -n "$want" -a "$got" = "$want"
    check "$format parts, kv = f16: send's logits are run's byte for byte" cmp -s "$tmp/run-$format.st" "$tmp/send-$format.st"
    kill -TERM $launcher
    wait $launcher
    check "$format pipeline: the launcher exits 0 on SIGTERM" test $? -eq 0
    launcher=""
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
