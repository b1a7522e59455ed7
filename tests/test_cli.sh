#!/usr/bin/env bash
# test_cli.sh — the programs' command-line contracts: output formats other tools rely on
# (--print-ids, --logits, "step K loss X"), exit codes, and whole flows (split --topology, launch,
# send equal to run, train + resume, merge, PyTorch checkpoints and the seed's parts imported).
# Ends with "N passed, N failed".
set -u
bin=$(cd "${SL_BIN:-bin}" && pwd)
fixtures=${SL_FIXTURES:-../shared/fixtures}
tmp=$(mktemp -d /tmp/sl-test-cli-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
. "$(dirname "$0")/check.sh"

ids=625,684,897,578,775,833,225
# Ports: CHECK_PORT_BASE (or $SL_TEST_PORT_BASE), _SLOTS and _SPAN of tests/check.h, the C tests'
# one definition, offset by this shell's pid as check_port() offsets by the program's.
port_const() { sed -n "s/^#define $1 \([0-9]*\)$/\1/p" "$(dirname "$0")/check.h"; }
port=$((${SL_TEST_PORT_BASE:-$(port_const CHECK_PORT_BASE)} + $$ % $(port_const CHECK_PORT_SLOTS) * $(port_const CHECK_PORT_SPAN)))
check "the port range of tests/check.h was read ($port)" test "$port" -gt 0
# --help everywhere, exit codes
for p in split node launch send run tokenize mkmodel train merge bench bench-pipeline import; do
    check "$p --help exits 0" status_is 0 "$bin/zmq-splitlearn-$p" --help
done
check "run without arguments: usage error 2" status_is 2 "$bin/zmq-splitlearn-run"
check "run on a missing model: 2 (a missing file named on the command line)" status_is 2 "$bin/zmq-splitlearn-run" "$tmp/none" --ids 1,2
check "split with bad splits: 2 (split points the model does not have)" status_is 2 "$bin/zmq-splitlearn-split" "$fixtures/tiny-b" --splits 4,2 -o "$tmp/x"
check "send with a bad option: 2" status_is 2 "$bin/zmq-splitlearn-send" --bogus

# run: --print-ids is the last line, the greedy reference of tiny-b's prompt 1
out=$("$bin/zmq-splitlearn-run" "$fixtures/tiny-b" --ids $ids --max-new-tokens 5 --print-ids --quiet)
check "run --print-ids prints the generated ids" test "$out" = "255 255 255 255 255"
"$bin/zmq-splitlearn-run" "$fixtures/tiny-b" --ids $ids --max-new-tokens 1 --quiet --logits "$tmp/run.st"
check "run --logits writes [7, 1000] F32" grep -q '"logits":{"shape":\[7,1000\]' <(head -c 200 "$tmp/run.st" | tail -c +9)

# tokenize round trip
ids_text=$("$bin/zmq-splitlearn-tokenize" "Hello world!")
check "tokenize" test "$ids_text" = "15496 995 0"
check "tokenize --decode" test "$("$bin/zmq-splitlearn-tokenize" --decode 15496 995 0)" = "Hello world!"

# split --topology, launch, send equals run (ids and logits)
"$bin/zmq-splitlearn-split" "$fixtures/tiny-b" --splits 2,4 -o "$tmp/parts" --topology "$tmp/topo.ini" \
    --port $port >/dev/null
check "split wrote the topology" grep -q "layers = 2-4" "$tmp/topo.ini"
sed -i "/^\[pipeline\]/a checkpoint_root = $tmp\ntrain = yes" "$tmp/topo.ini" # where the trunk keeps checkpoints; it trains
"$bin/zmq-splitlearn-launch" "$tmp/topo.ini" --ready-file "$tmp/ready" >"$tmp/launch.log" 2>&1 &
launcher=$!
for _ in $(seq 300); do [ -f "$tmp/ready" ] && break; sleep 0.05; done
check "launcher ready" test -f "$tmp/ready"
sent=$("$bin/zmq-splitlearn-send" "$tmp/topo.ini" --ids $ids --max-new-tokens 5 --print-ids --quiet --logits "$tmp/send.st")
check "send --print-ids equals run" test "$sent" = "$out"
check "send --logits equals run --logits byte for byte" cmp -s "$tmp/run.st" "$tmp/send.st"
json=$("$bin/zmq-splitlearn-send" "$tmp/topo.ini" --ids $ids --max-new-tokens 3 --json)
check "send --json" grep -q '"ids":\[255,255,255\]' <<<"$json"
traced=$("$bin/zmq-splitlearn-send" "$tmp/topo.ini" --ids $ids --max-new-tokens 3 --json --trace)
check "send --trace --json: every hop of the prompt and of the last token, in chain order" \
    grep -Eq '"prompt":\{"hops":\[\{"node":"bottom".*\{"node":"trunk1".*\{"node":"top".*"last_token":\{"hops":\[\{"node":"bottom"' <<<"$traced"
check "send --trace: a table on stderr" bash -c "'$bin/zmq-splitlearn-send' '$tmp/topo.ini' --ids $ids \
    --max-new-tokens 2 --trace --quiet 2>&1 >/dev/null | grep -Eq '^  trunk1 +localhost +[0-9.]+ +[0-9.]+ +[0-9.]+$'"
# --timings: llama.cpp's two lines end stderr: the prompt's 7 tokens, then the decode steps (the
# first of --print-ids' 6 tokens comes from the prompt's pass, each other costs one step) and
# Z = Y/N within the rounding of the printed figures (0.005 each)
timings_ok() { # timings_ok PROGRAM TARGET
    "$bin/zmq-splitlearn-$1" "$2" --ids $ids --max-new-tokens 6 --ignore-eos --print-ids --quiet --timings \
        >"$tmp/timed.out" 2>"$tmp/timed.err" || return 1
    local n prefill decode re1='^prefill: 7 tokens in [0-9]+\.[0-9]{2} ms$'
    local re2='^decode: ([0-9]+) tokens in ([0-9]+\.[0-9]{2}) ms \(([0-9]+\.[0-9]{2}) ms/token\)$'
    n=$(wc -w <"$tmp/timed.out") prefill=$(tail -n 2 "$tmp/timed.err" | head -n 1) decode=$(tail -n 1 "$tmp/timed.err")
    [[ $prefill =~ $re1 ]] && [[ $decode =~ $re2 ]] && test "$n" -eq 6 -a "${BASH_REMATCH[1]}" -eq $((n - 1)) &&
        awk -v y="${BASH_REMATCH[2]}" -v z="${BASH_REMATCH[3]}" -v n=$((n - 1)) 'BEGIN { d = z - y / n; exit !(d * d <= 0.006 ^ 2) }'
}
check "run --timings: prefill and decode on stderr, N the decode steps, Z = Y/N" timings_ok run "$fixtures/tiny-b"
check "send --timings: the same" timings_ok send "$tmp/topo.ini"
# sampling: the pipeline samples exactly what run samples, whatever the temperature, top-k, top-p
# and seed; the draws must also differ from one another, or equal answers would prove nothing
greedy16=$("$bin/zmq-splitlearn-run" "$fixtures/tiny-b" --ids $ids --max-new-tokens 16 --ignore-eos --print-ids --quiet)
samplings=("--temperature 1 --seed 1" "--temperature 0.7 --seed 2" "--temperature 1.5 --top-k 50 --seed 3"
    "--temperature 2 --top-p 0.9 --seed 4" "--temperature 1.2 --top-k 20 --top-p 0.8 --seed 5" "--top-k 3 --seed 6"
    "--top-p 0.3 --seed 7" "--temperature 4 --seed 9223372036854775807" "--temperature 1 --seed 1 --top-k 1000")
drawn=""
for s in "${samplings[@]}"; do
    want=$("$bin/zmq-splitlearn-run" "$fixtures/tiny-b" --ids $ids --max-new-tokens 16 --ignore-eos --print-ids --quiet $s)
    got=$("$bin/zmq-splitlearn-send" "$tmp/topo.ini" --ids $ids --max-new-tokens 16 --ignore-eos --print-ids --quiet $s)
    check "send samples what run samples ($s): '$got', run '$want'" test "$(wc -w <<<"$want")" -eq 16 -a "$got" = "$want"
    drawn+="$want"$'\n'
done
different=$(grep -v -x -F "$greedy16" <<<"$drawn" | sort -u | wc -l)
check "the sampled answers differ from greedy and between seeds ($different different of ${#samplings[@]})" \
    test "$different" -ge $((${#samplings[@]} - 2))
check "top-k 1000 of a 1000-token vocabulary draws what no top-k draws" test "$(sed -n 1p <<<"$drawn")" = "$(sed -n 9p <<<"$drawn")"
# streamed text: the bytes of the generated ids, a character split between two tokens printed
# whole with the second, an unfinished last one at the end (seed 7 ends on the first byte of a
# two-byte character; checked below)
# tiny-b's vocabulary has 1000 tokens: its text is that of GPT-2's first 1000 (mkmodel --vocab cuts it)
"$bin/zmq-splitlearn-mkmodel" -o "$tmp/vocab-1000" --vocab 1000 --n-layer 1 --n-embd 4 --n-head 1 >/dev/null
streams_its_ids() { # streams_its_ids PROGRAM TARGET: the text printed before --print-ids's line is the ids' text
    "$bin/zmq-splitlearn-$1" "$2" --ids $ids --max-new-tokens 12 --ignore-eos --temperature 1 --seed 7 --print-ids \
        --vocab "$tmp/vocab-1000" >"$tmp/streamed-$1"
    { "$bin/zmq-splitlearn-tokenize" --vocab "$tmp/vocab-1000" --decode $(tail -n 1 "$tmp/streamed-$1") &&
        tail -n 1 "$tmp/streamed-$1"; } |
        cmp -s - "$tmp/streamed-$1"
}
check "run streams the text of its ids, byte for byte" streams_its_ids run "$fixtures/tiny-b"
check "send streams the text of its ids, byte for byte" streams_its_ids send "$tmp/topo.ini"
last_byte=$(tail -n 2 "$tmp/streamed-run" | head -n 1 | tail -c 2 | od -An -tu1 | awk '{print $1}')
check "... up to an unfinished last character (byte $last_byte)" test "${last_byte:-0}" -ge 194 -a "${last_byte:-0}" -le 244
kill -TERM $launcher; wait $launcher
check "launcher exits 0 on SIGTERM" test $? -eq 0
check "send with no pipeline: exit 3 naming the stage" bash -c \
    "'$bin/zmq-splitlearn-send' '$tmp/topo.ini' --ids $ids --timeout 0.5 2>&1 >/dev/null | grep -q 'node bottom'; \
     test \${PIPESTATUS[0]} -eq 3"

# train: "step K loss X", the fixture's first loss, resume continues exactly, merge
train_ids=215,845,160,857,612,114,43,444,35,141,514,970,466,808,917,823,629,441,514,266,496,379,247,993
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --local --ids $train_ids --steps 4 >"$tmp/straight.log"
check "train prints step K loss X" grep -qE '^step 4 loss [0-9.]+$' "$tmp/straight.log"
check "first loss is the fixture's 7.010754" grep -q '^step 1 loss 7.01075' "$tmp/straight.log"
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --local --ids $train_ids --steps 2 --save-dir "$tmp/ckpt" >/dev/null
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --local --ids $train_ids --steps 4 --resume "$tmp/ckpt" >"$tmp/resumed.log"
check "resume gives the same losses" test "$(grep '^step [34] ' "$tmp/straight.log")" = "$(grep '^step [34] ' "$tmp/resumed.log")"
"$bin/zmq-splitlearn-merge" "$tmp/ckpt" -o "$tmp/merged" >/dev/null
check "merge writes an untied HF directory" grep -q '"tie_word_embeddings":.*false' "$tmp/merged/config.json"
check "the merged model runs" status_is 0 "$bin/zmq-splitlearn-run" "$tmp/merged" --ids $ids --max-new-tokens 2 --quiet

# train with the trunk on its node: same losses as --local
"$bin/zmq-splitlearn-launch" "$tmp/topo.ini" --only trunk1 --ready-file "$tmp/ready2" >"$tmp/launch2.log" 2>&1 &
launcher=$!
for _ in $(seq 300); do [ -f "$tmp/ready2" ] && break; sleep 0.05; done
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps 4 >"$tmp/remote.log" 2>&1
check "training through the trunk node equals --local" test "$(cat "$tmp/remote.log")" = "$(cat "$tmp/straight.log")"
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps 4 >"$tmp/remote2.log" 2>&1
check "a second run on the same trunk starts from the part, not from the first run" \
    test "$(cat "$tmp/remote2.log")" = "$(cat "$tmp/straight.log")"

# SIGTERM to a trainer with a remote trunk: it finishes the step, saves every part, exits 0
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps 1000000 --save-dir "$tmp/ckpt-term" \
    --save-every 0 >"$tmp/term.log" 2>&1 &
trainer=$!
for _ in $(seq 600); do grep -q '^step 3 ' "$tmp/term.log" && break; sleep 0.05; done
kill -TERM $trainer
wait $trainer
check "SIGTERM: the trainer with a remote trunk exits 0 (status $?)" test $? -eq 0
at=$(sed -n 's/^checkpoint: .* (step \([0-9]*\))$/\1/p' "$tmp/term.log")
check "... after saving a checkpoint (step '$at')" test -n "$at"
check "... the trunk's part included, at the same step" \
    grep -Eq "\"step\":[[:space:]]*$at,?$" "$tmp/ckpt-term/trunk/checkpoint_trunk1_metadata.json"
check "... with that step's loss" grep -Eq "\"loss\":[[:space:]]*$(sed -n "s/^step $at loss \([0-9.]*\)$/\1/p" "$tmp/term.log" |
    cut -c1-6)" "$tmp/ckpt-term/trunk/checkpoint_trunk1_metadata.json"
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps $((at + 2)) --resume "$tmp/ckpt-term" \
    >"$tmp/term-resumed.log" 2>&1
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --local --ids $train_ids --steps $((at + 2)) >"$tmp/term-whole.log"
check "... and resumes with the losses of an uninterrupted run" test -n "$at" -a \
    "$(grep -E "^step $((at + 1)) |^step $((at + 2)) " "$tmp/term-whole.log")" = "$(grep '^step ' "$tmp/term-resumed.log")"
# parts of checkpoints from different steps are refused, naming both steps
mkdir -p "$tmp/mixed"
cp -r "$tmp/ckpt-term/." "$tmp/mixed/"
cp "$tmp/ckpt/trunk/"* "$tmp/mixed/trunk/" # the trunk of the step-2 checkpoint
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps $((at + 2)) --resume "$tmp/mixed" >"$tmp/mixed.log" 2>&1
check "a checkpoint mixing steps is refused (status $?)" grep -q "its part 'trunk1' was saved at step 2, not at step $at" \
    "$tmp/mixed.log"

# a save that stopped half-way (here: the top's part of step 6 never written) leaves every part's
# save before it: the run resumes from step 4 on every host, exactly
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps 4 --save-every 2 --save-dir "$tmp/half" \
    >/dev/null 2>&1
cp -r "$tmp/half/top" "$tmp/top-at-4"
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps 6 --save-every 2 --resume "$tmp/half" \
    --save-dir "$tmp/half" >/dev/null 2>&1
rm -rf "$tmp/half/top" && cp -r "$tmp/top-at-4" "$tmp/half/top"
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps 6 --resume "$tmp/half" >"$tmp/half.log" 2>&1
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --local --ids $train_ids --steps 6 >"$tmp/straight6.log"
check "a save that stopped half-way: every part resumes from the save before it, exactly" \
    test "$(grep -E '^step [56] ' "$tmp/straight6.log")" = "$(grep '^step ' "$tmp/half.log")"
# saving a checkpoint just resumed, before any step, elsewhere: the trunk saves what it loaded
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps 4 --resume "$tmp/half" --save-dir "$tmp/copy" \
    >/dev/null 2>&1
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps 6 --resume "$tmp/copy" >"$tmp/copy.log" 2>&1
check "a checkpoint saved right after a resume resumes exactly" \
    test "$(grep -E '^step [56] ' "$tmp/straight6.log")" = "$(grep '^step ' "$tmp/copy.log")"

# the trunk on "another host": the trainer's relative checkpoint directory is taken under its
# own working directory, the trunk's under checkpoint_root; saving and resuming need no shared one
mkdir -p "$tmp/host-a"
(cd "$tmp/host-a" && "$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps 2 --save-dir ck >/dev/null 2>&1 &&
    "$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps 4 --resume ck >"$tmp/hosts.log" 2>&1)
check "two hosts: each keeps its own parts of the checkpoint" \
    test -f "$tmp/ck/trunk/checkpoint_trunk1.safetensors" -a ! -e "$tmp/host-a/ck/trunk" -a \
    -f "$tmp/host-a/ck/bottom/checkpoint_bottom.safetensors"
check "two hosts: resuming gives the uninterrupted losses" \
    test "$(grep '^step [34] ' "$tmp/straight.log")" = "$(grep '^step ' "$tmp/hosts.log")"
kill -TERM $launcher; wait $launcher

# no trunk running: the trainer says that a stage did not answer (exit 3, as send)
sed 's/^\[pipeline\]$/[pipeline]\ntimeout = 1/' "$tmp/topo.ini" >"$tmp/quick.ini"
check "no trunk running: train exits 3 (a stage did not answer)" status_is 3 "$bin/zmq-splitlearn-train" "$tmp/quick.ini" --ids $train_ids --steps 2 --recover-wait 0

# a trunk killed mid-training, with --recover-wait 0: the trainer stops at once naming it and the
# last checkpoint, and --resume from there continues with the losses of an uninterrupted run
start_trunk() { # start_trunk READY_FILE: the trunk's launcher in the background, $launcher
    "$bin/zmq-splitlearn-launch" "$tmp/topo.ini" --only trunk1 --ready-file "$1" >>"$tmp/launch3.log" 2>&1 &
    launcher=$!
    for _ in $(seq 300); do [ -f "$1" ] && break; sleep 0.05; done
}
start_trunk "$tmp/ready3"
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps 1000000 --save-dir "$tmp/ckpt3" \
    --save-every 2 --recover-wait 0 >"$tmp/killed.log" 2>&1 &
trainer=$!
for _ in $(seq 600); do grep -q '^step 5 ' "$tmp/killed.log" && break; sleep 0.05; done
t0=$(date +%s)
kill -KILL "$(pgrep -P $launcher)"
wait $trainer
status=$?
wait $launcher 2>/dev/null
check "trainer exits 1 when its trunk dies (status $status)" test $status -eq 1
check "... within 5 s (not the 30 s timeout)" test $(($(date +%s) - t0)) -le 5
check "... naming the lost node" grep -q "lost the connection to node trunk1" "$tmp/killed.log"
saved=$(sed -n 's/.*the last checkpoint is .* (step \([0-9]*\)).*/\1/p' "$tmp/killed.log")
check "... and the checkpoint to resume from (step '$saved')" grep -q -- "--resume $tmp/ckpt3" "$tmp/killed.log"
start_trunk "$tmp/ready4"
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --ids $train_ids --steps $((saved + 2)) --resume "$tmp/ckpt3" \
    >"$tmp/after.log" 2>&1
kill -TERM $launcher; wait $launcher
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --local --ids $train_ids --steps $((saved + 2)) >"$tmp/whole.log"
check "resumed after the crash: the losses of an uninterrupted run" test -n "$saved" -a \
    "$(grep -E "^step $((saved + 1)) |^step $((saved + 2)) " "$tmp/whole.log")" = "$(grep '^step ' "$tmp/after.log")"

# the same with the launcher restarting the trunk (restart = yes): the trainer waits for it,
# reloads the last checkpoint on every stage and ends with the losses of an uninterrupted run
sed 's/^\[pipeline\]$/[pipeline]\nrestart = yes/' "$tmp/topo.ini" >"$tmp/restart.ini"
"$bin/zmq-splitlearn-launch" "$tmp/restart.ini" --only trunk1 --ready-file "$tmp/ready5" >"$tmp/launch5.log" 2>&1 &
launcher=$!
for _ in $(seq 300); do [ -f "$tmp/ready5" ] && break; sleep 0.05; done
"$bin/zmq-splitlearn-train" "$tmp/restart.ini" --ids $train_ids --steps 200 --save-dir "$tmp/ckpt5" --save-every 2 \
    >"$tmp/recovered.log" 2>&1 &
trainer=$!
kill_at=$((3 + $$ % 6)) # a step from 3 to 8, fixed by the shell's pid
for _ in $(seq 600); do grep -q "^step $kill_at " "$tmp/recovered.log" && break; sleep 0.02; done
kill -KILL "$(pgrep -P $launcher)"
wait $trainer
status=$?
kill -TERM $launcher; wait $launcher
"$bin/zmq-splitlearn-train" "$tmp/topo.ini" --local --ids $train_ids --steps 200 >"$tmp/whole12.log"
check "a trunk killed at step $kill_at and restarted: the trainer recovers by itself (status $status)" \
    grep -q "^recovered: " "$tmp/recovered.log"
check "... and ends with the losses of an uninterrupted run" test $status -eq 0 -a \
    "$(grep "^step 200 " "$tmp/whole12.log")" = "$(grep "^step 200 " "$tmp/recovered.log" | tail -n 1)"

# training on text: usage errors against the model, data errors naming file and line, the
# cosine schedule, the log continued by a resume, the held-out eval loss
"$bin/zmq-splitlearn-mkmodel" -o "$tmp/small" --n-layer 2 --n-embd 32 --n-head 2 --n-positions 32 --seed 3 >/dev/null
"$bin/zmq-splitlearn-split" "$tmp/small" --splits 1 -o "$tmp/small-parts" --topology "$tmp/small.ini" \
    --port $((port + 3)) >/dev/null
for i in $(seq 300); do echo "Line $i: the quick brown fox jumps over the lazy dog."; done >"$tmp/text.txt"
train() { "$bin/zmq-splitlearn-train" "$tmp/small.ini" "$@"; }
check "--seq-len over n_positions: usage error 2" status_is 2 train --data "$tmp/text.txt" --seq-len 33
check "... naming both" bash -c "'$bin/zmq-splitlearn-train' '$tmp/small.ini' --data '$tmp/text.txt' --seq-len 33 2>&1 |
    grep -q -- '--seq-len 33 is longer than the model.s n_positions (32)'"
check "an id outside the vocabulary: usage error 2" status_is 2 train --ids 1,2,50257
check "--steps with --epochs: usage error 2" status_is 2 train --data "$tmp/text.txt" --steps 2 --epochs 1
check "a batch over the trunks' max_train_tokens: usage error 2" \
    status_is 2 "$bin/zmq-splitlearn-train" "$tmp/topo.ini" --data "$tmp/text.txt" --batch 4096 --seq-len 64
{ head -n 40 "$tmp/text.txt"; printf 'bad \xff byte\n'; } >"$tmp/latin.txt"
check "data that is not UTF-8: error 1 naming file, line and byte" bash -c "'$bin/zmq-splitlearn-train' '$tmp/small.ini' \
    --data '$tmp/latin.txt' 2>&1 | grep -q 'latin.txt:41 (byte [0-9]*): not UTF-8'; test \${PIPESTATUS[0]} -eq 1"
printf 'a\0b' >"$tmp/nul.txt"
check "data with a NUL byte: error 1" bash -c "'$bin/zmq-splitlearn-train' '$tmp/small.ini' --data '$tmp/nul.txt' 2>&1 |
    grep -q 'nul.txt: a NUL byte at offset 1'"
train --data "$tmp/text.txt" --batch 2 --seq-len 16 --steps 12 --lr 1e-2 --warmup 2 --schedule cosine \
    --eval-every 4 --save-dir "$tmp/cos" --save-every 6 >"$tmp/cos.log"
lrs=$(cut -d, -f4 "$tmp/cos/train_log.csv" | tail -n +2 | tr '\n' ' ')
check "cosine: warmup, then decay to 10% of --lr ($lrs)" test "$(echo $lrs | cut -d' ' -f1,2,12)" = "5.000e-03 1.000e-02 1.220e-03"
check "held-out eval loss every --eval-every steps" test "$(grep -c ' eval [0-9.]*$' "$tmp/cos.log")" -eq 3
train --data "$tmp/text.txt" --batch 2 --seq-len 16 --steps 12 --lr 1e-2 --warmup 2 --schedule cosine \
    --eval-every 4 --resume "$tmp/cos/" --save-dir "$tmp/cos2" >/dev/null 2>&1
check "a new run into another run's checkpoint directory: usage error 2" \
    status_is 2 train --data "$tmp/text.txt" --batch 2 --seq-len 16 --steps 12 --save-dir "$tmp/cos"
check "a resumed log continues the checkpoint's (header, steps 1..12 once)" \
    test "$(cut -d, -f1 "$tmp/cos2/train_log.csv" | tr '\n' ' ')" = "step 1 2 3 4 5 6 7 8 9 10 11 12 "
check "... with the uninterrupted losses" test "$(cut -d, -f2 "$tmp/cos2/train_log.csv")" = \
    "$(cut -d, -f2 "$tmp/cos/train_log.csv")"

# PyTorch checkpoints: the fixtures' torch.save files give run's logits byte for byte, as a model
# directory or one .pt file with --config; the seed's split parts, imported, serve the pipeline
# and answer as run does; the import's usage and data errors
"$bin/zmq-splitlearn-run" "$fixtures/torch/tiny-b-legacy-f32" --ids $ids --max-new-tokens 1 --quiet --logits "$tmp/pt.st"
check "run on pytorch_model.bin (legacy) equals run on model.safetensors" cmp -s "$tmp/run.st" "$tmp/pt.st"
cp "$fixtures/torch/tiny-b-legacy-f32/pytorch_model.bin" "$tmp/tiny-b.pt"
"$bin/zmq-splitlearn-run" "$tmp/tiny-b.pt" --config "$fixtures/tiny-b/config.json" --ids $ids --max-new-tokens 1 \
    --quiet --logits "$tmp/pt-config.st"
check "run on a .pt file with --config equals run on model.safetensors" cmp -s "$tmp/run.st" "$tmp/pt-config.st"
check "run on a .pt file without a config: 1" status_is 1 "$bin/zmq-splitlearn-run" "$tmp/tiny-b.pt" --ids $ids
"$bin/zmq-splitlearn-split" "$fixtures/torch/tiny-a-zip-f16" --splits 3 -o "$tmp/pt-parts" >/dev/null
check "split of pytorch_model.bin (zip) names it the source" grep -q '"file":.*"pytorch_model.bin"' "$tmp/pt-parts/split.json"
check "import without -o: usage error 2" status_is 2 "$bin/zmq-splitlearn-import" "$fixtures/torch/tiny-b-seed-parts"
check "import of a directory without parts: 1" status_is 1 "$bin/zmq-splitlearn-import" "$tmp/none" -o "$tmp/x"
"$bin/zmq-splitlearn-import" "$fixtures/torch/tiny-b-seed-parts" -o "$tmp/seed" --topology "$tmp/seed.ini" \
    --port $((port + 6)) >"$tmp/import.log"
check "import names the parts" grep -q '^trunk1   layers \[2,4)' "$tmp/import.log"
check "the imported trunk is split's trunk byte for byte" \
    cmp -s "$tmp/seed/trunk/tiny-b_2-4_trunk1.safetensors" "$tmp/parts/trunk/tiny-b_2-4_trunk1.safetensors"
check "the import names the seed's files as its source" grep -q '"file":.*"trunk/tiny-b_2-4_trunk.pt"' "$tmp/seed/split.json"
"$bin/zmq-splitlearn-launch" "$tmp/seed.ini" --ready-file "$tmp/seed-ready" >"$tmp/seed-launch.log" 2>&1 &
seed_launcher=$!
for _ in $(seq 300); do [ -f "$tmp/seed-ready" ] && break; sleep 0.05; done
"$bin/zmq-splitlearn-send" "$tmp/seed.ini" --ids $ids --max-new-tokens 1 --quiet --logits "$tmp/seed.st" >/dev/null
check "the imported parts' pipeline answers run's logits byte for byte" cmp -s "$tmp/run.st" "$tmp/seed.st"
kill -TERM $seed_launcher; wait $seed_launcher

# on a terminal: every step's line and a status line redrawn under them; plain lines otherwise
script -qc "'$bin/zmq-splitlearn-train' '$tmp/topo.ini' --local --ids $train_ids --steps 3" /dev/null >"$tmp/tty.log"
check "a TTY gets the status line (step/total, ETA) redrawn in place" grep -q $'step 3/3 (100%).*ETA 0:00:00\r\033\[K' "$tmp/tty.log"
check "... under every step's line" test "$(grep -c '^step [0-9]* loss' <(tr -d '\r' <"$tmp/tty.log" | sed 's/\x1b\[K/\n/g'))" -eq 3
check "no status line without a TTY" test -z "$(grep -E 'ETA|\[K' "$tmp/straight.log")"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
