#!/usr/bin/env bash
# test_ux.sh — what a user meets (issue 15 §2-§4): tokenizer.json and the vocab in use; nothing
# overwritten without --force, outputs checked before the work; prompts against n_positions and
# the context limit; seeds; train's checks before step 1, its announcements and its plot; every
# program's --version, usage errors and exit codes; zmq-splitlearn-info; make demo. Ends with
# "N passed, N failed".
set -u
bin=$(cd "${SL_BIN:-bin}" && pwd)
fixtures=$(cd "${SL_FIXTURES:-../shared/fixtures}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/sl-test-ux-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
. "$(dirname "$0")/check.sh"
# A check of several conditions defines cond() { A && B; } first, then: check "what" cond.
# runs PROGRAM ARGS... with stdout in $tmp/out, stderr in $tmp/err, the exit status in $status
run_tool() { local p=$1; shift; "$bin/zmq-splitlearn-$p" "$@" >"$tmp/out" 2>"$tmp/err"; status=$?; }
err_has() { grep -q -e "$1" "$tmp/err"; }
out_has() { grep -q -e "$1" "$tmp/out"; }
port_const() { sed -n "s/^#define $1 \([0-9]*\)$/\1/p" "$(dirname "$0")/check.h"; }
port=$((${SL_TEST_PORT_BASE:-$(port_const CHECK_PORT_BASE)} + $$ % $(port_const CHECK_PORT_SLOTS) * $(port_const CHECK_PORT_SPAN)))
wait_for() { for _ in $(seq 300); do [ -f "$1" ] && return 0; sleep 0.05; done; return 1; }

# ---- §4: every program alike ----
version=$(sed -n 's/^#define SL_VERSION "\(.*\)"$/\1/p' "$root/lib/version.h")
for p in split send run info tokenize mkmodel train merge bench-pipeline; do
    run_tool "$p" --version
    check "$p --version: '$(cat "$tmp/out")'" test "$status" -eq 0 -a "$(cat "$tmp/out")" = "zmq-splitlearn-$p (zmq-splitlearn) $version"
    run_tool "$p" --bogus-option
    check "$p with a bad option: exit 2, one error line and 'see --help', not the help" \
    test "$status" -eq 2 -a "$(wc -l <"$tmp/err")" -eq 2 -a "$(tail -n 1 "$tmp/err")" = "see zmq-splitlearn-$p --help"
done
run_tool split "$fixtures/tiny-b" -o "$tmp/x"
check "a usage error names it and points to --help (no help text)" \
    test "$status" -eq 2 -a "$(cat "$tmp/err")" = $'zmq-splitlearn-split: --splits is required\nsee zmq-splitlearn-split --help'
check "README: the exit codes, once, with 130" grep -q '^| 130 | stopped by SIGINT' "$root/README.md"
check "lib/cli.h: SL_EXIT_INTERRUPTED = 130" grep -q 'SL_EXIT_INTERRUPTED = 130' "$root/lib/cli.h"
for p in split send run info tokenize mkmodel train merge; do
    opts=$("$bin/zmq-splitlearn-$p" --help | grep -o -- '--[a-z][a-z-]*' | sort -u)
    missing=$(for o in $opts; do grep -q -- "$o" "$root/README.md" || echo "$o"; done | tr '\n' ' ')
    check "README lists $p's options (missing: $missing)" test -z "$missing"
done

# ---- §2: tokenizer.json, the vocab in use ----
# An HF tokenizer.json of GPT-2's vocab, written from vocab.json and merges.txt as HF does.
hf_json() { # hf_json VOCAB_DIR > tokenizer.json
    printf '{"version": "1.0", "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "special": true}],'
    printf ' "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,'
    printf ' "trim_offsets": true, "use_regex": true}, "decoder": {"type": "ByteLevel"},'
    printf ' "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",'
    printf ' "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "vocab": '
    cat "$1/vocab.json"
    printf ', "merges": ['
    tail -n +2 "$1/merges.txt" | sed 's/\\/\\\\/g; s/"/\\"/g; s/.*/"&"/' | paste -sd,
    printf ']}}\n'
}
mkdir -p "$tmp/hf-a" "$tmp/hf-vocab"
cp "$fixtures/tiny-a/config.json" "$fixtures/tiny-a/model.safetensors" "$tmp/hf-a/"
hf_json "$root/models/gpt2-vocab" >"$tmp/hf-a/tokenizer.json"
cp "$tmp/hf-a/tokenizer.json" "$tmp/hf-vocab/"
text="Hello world! The quick brown fox jumps over the lazy dog."
want=$("$bin/zmq-splitlearn-tokenize" "$text")
check "tokenize --vocab DIR holding only tokenizer.json: the same ids ($want)" \
    test "$("$bin/zmq-splitlearn-tokenize" --vocab "$tmp/hf-vocab" "$text")" = "$want"
run_tool run "$tmp/hf-a" "$text" --max-new-tokens 4 --print-ids
cond() { test "$status" -eq 0 && ! err_has bundled; }
check "run on a model with only tokenizer.json reads it (no bundled vocab named)" cond
hf_ids=$(tail -n 1 "$tmp/out")
run_tool run "$fixtures/tiny-a" "$text" --max-new-tokens 4 --print-ids
check "... and generates what the bundled vocab gives ($hf_ids)" test "$(tail -n 1 "$tmp/out")" = "$hf_ids"
check "the bundled vocab, when used, is named once" test "$(grep -c 'using the bundled GPT-2 vocab' "$tmp/err")" -eq 1
sed -i 's/"type": "BPE"/"type": "WordPiece"/' "$tmp/hf-a/tokenizer.json"
run_tool run "$tmp/hf-a" "$text"
cond() { test "$status" -eq 2 && err_has "model type WordPiece"; }
check "a tokenizer.json of another kind is refused, naming it" cond
run_tool run "$fixtures/tiny-b" "$text"
cond() {  test "$status" -eq 2 && err_has "vocabulary of 1000 tokens but the vocab in use" && err_has "has 50257"; }
check "a vocab of another size than the model's: exit 2 naming both" cond
"$bin/zmq-splitlearn-mkmodel" -o "$tmp/v1000" --vocab 1000 --n-layer 1 --n-embd 4 --n-head 1 >/dev/null
run_tool run "$fixtures/tiny-b" "Hello" --vocab "$tmp/v1000" --max-new-tokens 2
check "... and runs with a vocab of its size (mkmodel --vocab 1000 cuts GPT-2's)" test "$status" -eq 0

# ---- §3: nothing overwritten without --force; outputs checked first ----
run_tool split "$fixtures/tiny-b" --splits 2 -o "$tmp/sp"
check "split into a new directory" test "$status" -eq 0 -a -f "$tmp/sp/split.json"
run_tool split "$fixtures/tiny-b" --splits 1,3 -o "$tmp/sp"
cond() { test "$status" -eq 2 && err_has "$tmp/sp holds a split already" && err_has "--force"; }
check "split over a split: exit 2, naming it and --force" cond
check "... and the split there is untouched" grep -q '"splits":.*\[0,[[:space:]]*2' <(tr -d '\n' <"$tmp/sp/split.json")
run_tool split "$fixtures/tiny-b" --splits 1,3 -o "$tmp/sp" --force
cond() { test "$status" -eq 0 && out_has "removed the split that was in $tmp/sp (2 parts)"; }
check "split --force removes the old split and says so" cond
check "... leaving only the new parts" test "$(ls "$tmp/sp"/*/*.safetensors | wc -l)" -eq 3
mkdir -p "$tmp/notempty" && echo x >"$tmp/notempty/notes.txt"
run_tool split "$fixtures/tiny-b" --splits 2 -o "$tmp/notempty"
cond() { test "$status" -eq 2 && err_has "is not empty"; }
check "split into a directory holding something else: refused" cond
touch "$tmp/topo-exists.ini"
run_tool split "$fixtures/tiny-b" --splits 2 -o "$tmp/sp2" --topology "$tmp/topo-exists.ini"
check "split over an existing topology file: refused, nothing written" test "$status" -eq 2 -a ! -e "$tmp/sp2"
echo x >"$tmp/afile"
run_tool split "$fixtures/tiny-b" --splits 2 -o "$tmp/afile/sub"
cond() {  test "$status" -eq 2 && err_has "$tmp/afile/sub" && ! err_has "\.tmp"; }
check "-o under a file: exit 2 naming the user's path, not a .tmp" cond
run_tool split "$fixtures/tiny-b" --splits 2 -o "$tmp/sp3" --topology "$tmp/nodir/t.ini"
cond() { test "$status" -eq 2 -a ! -e "$tmp/sp3" && err_has "--topology: $tmp/nodir/t.ini"; }
check "--topology in a missing directory: refused before splitting" cond
run_tool merge "$tmp/sp" -o "$tmp/merged"
check "merge into a new directory" test "$status" -eq 0
run_tool merge "$tmp/sp" -o "$tmp/merged"
cond() { test "$status" -eq 2 && err_has "holds a model already"; }
check "merge over a model: exit 2 naming --force" cond
run_tool merge "$tmp/sp" -o "$tmp/merged" --force
check "merge --force replaces it" test "$status" -eq 0
run_tool run "$fixtures/tiny-a" --ids 1,2 --logits "$tmp/nodir/l.st"
cond() { test "$status" -eq 2 && err_has "$tmp/nodir/l.st" && ! out_has .; }
check "run --logits in a missing directory: exit 2 at once, naming the path" cond
run_tool mkmodel -o "$tmp/v1000" --vocab 1000 --n-layer 1 --n-embd 4 --n-head 1
check "mkmodel over a model: refused without --force" test "$status" -eq 2

# ---- §3: prompts, context limit, seeds (run, and send through a pipeline of tiny-a) ----
long=$(printf 'the %.0s' $(seq 300))
long=${long% }
run_tool run "$fixtures/tiny-a" "$long"
cond() { test "$status" -eq 2 && err_has "the prompt has 300 tokens; this model takes at most 128"; }
check "run: a prompt over n_positions, named with both numbers" cond
ids120=$(seq -s, 1 120)
run_tool run "$fixtures/tiny-a" --ids "$ids120" --max-new-tokens 50 --ignore-eos --print-ids
cond() { test "$status" -eq 0 && err_has "context limit (128 positions)" && test "$(tail -n 1 "$tmp/out" | wc -w)" -eq 9; }
check "run stops at the context limit and says so" cond
run_ids=$(tail -n 1 "$tmp/out")
run_tool run "$fixtures/tiny-a" --ids 5,6,7 --max-new-tokens 8 --temperature 1 --print-ids --quiet
seed=$(sed -n 's/.*sampling with --seed \([0-9]*\)$/\1/p' "$tmp/err")
first=$(tail -n 1 "$tmp/out")
check "sampling without --seed draws one and prints it ($seed)" test -n "$seed"
run_tool run "$fixtures/tiny-a" --ids 5,6,7 --max-new-tokens 8 --temperature 1 --print-ids --quiet
seed2=$(sed -n 's/.*sampling with --seed \([0-9]*\)$/\1/p' "$tmp/err")
check "... a fresh one each run ($seed2)" test -n "$seed2" -a "$seed2" != "$seed"
run_tool run "$fixtures/tiny-a" --ids 5,6,7 --max-new-tokens 8 --temperature 1 --print-ids --quiet --seed "$seed"
cond() { test "$(tail -n 1 "$tmp/out")" = "$first" && ! err_has "sampling with"; }
check "... that repeats the run" cond
greedy=$("$bin/zmq-splitlearn-run" "$fixtures/tiny-a" --ids 5,6,7 --max-new-tokens 8 --print-ids --quiet)
run_tool run "$fixtures/tiny-a" --ids 5,6,7 --max-new-tokens 8 --temperature 0 --top-k 5 --print-ids --quiet
cond() { test "$status" -eq 0 -a "$(tail -n 1 "$tmp/out")" = "$greedy" && ! err_has seed; }
check "--temperature 0 is greedy" cond

"$bin/zmq-splitlearn-split" "$fixtures/tiny-a" --splits 2,4 -o "$tmp/a-parts" --topology "$tmp/a.ini" --port "$port" \
    >/dev/null
"$bin/zmq-splitlearn-launch" "$tmp/a.ini" --ready-file "$tmp/a-ready" >"$tmp/a-launch.log" 2>&1 &
launcher=$!
check "the tiny-a pipeline starts" wait_for "$tmp/a-ready"
run_tool send "$tmp/a.ini" "$long"
cond() { test "$status" -eq 2 && err_has "the prompt has 300 tokens; this model takes at most 128"; }
check "send: a prompt over n_positions, checked by send itself" cond
run_tool send "$tmp/a.ini" --ids "$ids120" --max-new-tokens 50 --ignore-eos --print-ids --quiet
cond() { test "$status" -eq 0 -a "$(tail -n 1 "$tmp/out")" = "$run_ids" && err_has "context limit (128 positions)"; }
check "send stops at the context limit as run does, and says so" cond
run_tool send "$tmp/a.ini" --ids "$ids120" --max-new-tokens 50 --ignore-eos --json
check "send --json gives the reason: context_limit" grep -q '"stopped":"context_limit"' "$tmp/out"
run_tool send "$tmp/a.ini" --ids 5,6,7 --max-new-tokens 3 --ignore-eos --json
check "... max_new_tokens" grep -q '"stopped":"max_new_tokens"' "$tmp/out"
run_tool send "$tmp/a.ini" --ids 5,6,7 --max-new-tokens 8 --temperature 1 --print-ids --quiet
sseed=$(sed -n 's/.*sampling with --seed \([0-9]*\)$/\1/p' "$tmp/err")
check "send draws and prints a seed too, which run repeats" test -n "$sseed" -a "$(tail -n 1 "$tmp/out")" = \
    "$("$bin/zmq-splitlearn-run" "$fixtures/tiny-a" --ids 5,6,7 --max-new-tokens 8 --temperature 1 --print-ids --quiet --seed "$sseed")"
# SIGINT while a stage does not answer (the trunk stopped): 130
trunk=$(pgrep -P $launcher -f ' trunk1$' | head -n 1)
kill -STOP "$trunk"
"$bin/zmq-splitlearn-send" "$tmp/a.ini" --ids 5,6,7 --timeout 30 >/dev/null 2>&1 &
sender=$!
sleep 1
kill -INT $sender
wait $sender
check "send stopped by SIGINT: 130" test $? -eq 130
kill -CONT "$trunk"
kill -TERM $launcher
wait $launcher
sed "s/:$port\$/:0/" "$tmp/a.ini" >"$tmp/port0.ini"
run_tool send "$tmp/port0.ini" --ids 1
cond() { test "$status" -eq 2 && err_has "1..65535"; }
check "a topology with listen port 0: exit 2 naming the port rule" cond

# ---- §3: train checks every save location before step 1, and says what it keeps ----
# A model directory given with a trailing slash names the parts as without it.
check "split MODEL/ names the parts after the directory" bash -c "'$bin/zmq-splitlearn-split' '$fixtures/tiny-b/' \
    --splits 2 -o '$tmp/slash-parts' >/dev/null && test -f '$tmp/slash-parts/bottom/tiny-b_2_bottom.safetensors'"
"$bin/zmq-splitlearn-split" "$fixtures/tiny-b" --splits 2,4 -o "$tmp/b-parts" --topology "$tmp/b.ini" \
    --port $((port + 4)) >/dev/null
sed -i "/^\[pipeline\]/a checkpoint_root = $tmp/root\ntrain = yes" "$tmp/b.ini"
train_ids=215,845,160,857,612,114,43,444,35,141,514,970,466,808,917,823,629,441,514,266,496,379,247,993
run_tool train "$tmp/b.ini" --local --ids $train_ids --steps 2
cond() { test "$status" -eq 0 && out_has "nothing of this run will be kept"; }
check "train without --save-dir warns that nothing will be kept" cond
run_tool train "$tmp/b.ini" --ids $train_ids --steps 2 --save-dir "$tmp/elsewhere"
cond() {  test "$status" -eq 2 && err_has "set checkpoint_root = $tmp/elsewhere in \[pipeline\], or use a path below $tmp/root" && ! out_has "^step 1 "; }
check "an absolute --save-dir outside the trunks' checkpoint_root: exit 2 before step 1, with the fix" cond
run_tool train "$tmp/b.ini" --ids $train_ids --steps 2 --save-dir "a/../b"
cond() { test "$status" -eq 2 && err_has "'..'"; }
check "a --save-dir with '..' (the trunks refuse it): exit 2 before step 1" cond
run_tool train "$tmp/b.ini" --local --ids $train_ids --steps 2 --save-dir "$tmp/afile/ck"
cond() { test "$status" -eq 2 && err_has "--save-dir $tmp/afile/ck" && ! out_has "^step 1 "; }
check "a --save-dir that cannot be made: exit 2 naming it, before step 1" cond
mkdir -p "$tmp/root" && echo x >"$tmp/root/ckf"
"$bin/zmq-splitlearn-launch" "$tmp/b.ini" --only trunk1 --ready-file "$tmp/b-ready" >"$tmp/b-launch.log" 2>&1 &
launcher=$!
check "the tiny-b trunk starts" wait_for "$tmp/b-ready"
mkdir -p "$tmp/host-a" && cd "$tmp/host-a" || exit 1
run_tool train "$tmp/b.ini" --ids $train_ids --steps 2 --save-dir ckf
cond() { test "$status" -eq 2 && err_has "trunk1 (on this host) cannot save its part in $tmp/root/ckf" && ! out_has "^step 1 "; }
check "a trunk on this host that cannot write its directory: exit 2 before step 1, naming it" cond
run_tool train "$tmp/b.ini" --ids $train_ids --steps 4 --save-every 2 --save-dir ck
cond() { test "$status" -eq 0 && out_has "^checkpoint: ck (step 2)$" && out_has "^checkpoint: ck (step 4)$"; }
check "every save is announced with its step" cond
check "where the trunk writes its part: its host and absolute path" \
    out_has "^checkpoints of trunk1: on localhost, $tmp/root/ck/trunk/checkpoint_trunk1.safetensors$"
check "... the file is there" test -f "$tmp/root/ck/trunk/checkpoint_trunk1.safetensors"
run_tool train "$tmp/b.ini" --ids $train_ids --steps 5 --resume ck --save-dir ck
cond() { test "$status" -eq 0 && out_has "^resumed ck at step 4$"; }
check "a resume is announced with its step" cond
run_tool merge ck -o merged
cond() { test "$status" -eq 1 && err_has "the node trunk1 wrote it on its host, at localhost:$tmp/root/ck/trunk/checkpoint_trunk1.safetensors"; }
check "merge names a trunk part that is on its host: host and path" cond
cd "$root" || exit 1
"$bin/zmq-splitlearn-train" "$tmp/b.ini" --ids $train_ids --steps 1000000 --save-every 0 --save-dir "$tmp/root/int" \
    >"$tmp/int.log" 2>&1 &
trainer=$!
for _ in $(seq 600); do grep -q '^step 2 ' "$tmp/int.log" && break; sleep 0.05; done
kill -INT $trainer
wait $trainer
check "train stopped by SIGINT: 130 ..." test $? -eq 130
check "... after saving its checkpoint" grep -q '^checkpoint: .* (step [0-9]*)$' "$tmp/int.log"
kill -TERM $launcher
wait $launcher
# With checkpoint_root relative (the node's working directory) only the trunk can tell where it
# writes: the trainer asks it with a dry-run save before step 1, and the trunk answers where, or
# refuses saying what to change
start_trunk_in() { # start_trunk_in DIR TOPOLOGY: the trunk launched from DIR, $launcher
    (cd "$1" && exec "$bin/zmq-splitlearn-launch" "$2" --only trunk1 --ready-file "$1/ready" >"$1/launch.log" 2>&1) &
    launcher=$!
    wait_for "$1/ready"
}
mkdir -p "$tmp/host-b/troot" "$tmp/host-c" "$tmp/host-t"
sed "s|^checkpoint_root = .*|checkpoint_root = troot|" "$tmp/b.ini" >"$tmp/b-rel.ini"
check "a trunk with a relative checkpoint_root starts" start_trunk_in "$tmp/host-b" "$tmp/b-rel.ini"
cd "$tmp/host-t" || exit 1
run_tool train "$tmp/b-rel.ini" --ids $train_ids --steps 2 --save-dir "$tmp/outside"
cond() {
    test "$status" -eq 2 && err_has "node trunk1: .*set checkpoint_root = $tmp/outside in \[pipeline\], or use a path below $tmp/host-b/troot" &&
        ! out_has "^step 1 " && ! out_has "will save" && test ! -e "$tmp/outside"
}
check "a --save-dir outside a trunk's checkpoint_root, which only the trunk knows: exit 2 before step 1, with the fix" cond
run_tool train "$tmp/b-rel.ini" --ids $train_ids --steps 2 --save-every 1 --save-dir ck
trunk_dir="$tmp/host-b/troot/ck"
cond() { test "$status" -eq 0 && out_has "^trunk trunk1 will save to $(uname -n):$trunk_dir$" &&
    test "$(grep -n -m 1 'will save' "$tmp/out" | cut -d: -f1)" -lt "$(grep -n -m 1 '^step 1 ' "$tmp/out" | cut -d: -f1)"; }
check "before step 1 the trainer prints where the trunk will save: its host and absolute path" cond
cond() { grep -Eq '"step":[[:space:]]*2,?$' "$trunk_dir/trunk/checkpoint_trunk1_metadata.json" &&
    test -f "$trunk_dir/trunk/prev/checkpoint_trunk1.safetensors" && test ! -e "$tmp/host-t/ck/trunk"; }
check "... and the saves land there" cond
check "... as trunks.json says, for merge" grep -q "\"file\":.*\"$trunk_dir/trunk/checkpoint_trunk1.safetensors\"" ck/trunks.json
kill -TERM $launcher
wait $launcher
# a checkpoint_root nobody can write (root writes anywhere but in sysfs)
if [ "$(id -u)" -eq 0 ]; then ln -s /sys "$tmp/host-c/ro"; else mkdir "$tmp/host-c/ro" && chmod 555 "$tmp/host-c/ro"; fi
sed "s|^checkpoint_root = .*|checkpoint_root = ro|" "$tmp/b.ini" >"$tmp/b-ro.ini"
check "a trunk with an unwritable checkpoint_root starts" start_trunk_in "$tmp/host-c" "$tmp/b-ro.ini"
run_tool train "$tmp/b-ro.ini" --ids $train_ids --steps 2 --save-dir ck2
cond() {
    test "$status" -eq 2 && err_has "node trunk1: .*cannot write in .*set checkpoint_root in \[pipeline\] to a directory trunk1 can write" &&
        ! out_has "^step 1 " && test ! -e ck2
}
check "a trunk whose checkpoint_root it cannot write: exit 2 before step 1, with the fix" cond
cd "$root" || exit 1
kill -TERM $launcher
wait $launcher

# data named on the command line
run_tool train "$tmp/b.ini" --local --data /tmp --steps 1
cond() { test "$status" -eq 2 && err_has "--data /tmp is a directory"; }
check "--data /tmp: exit 2, it is a directory" cond
run_tool train "$tmp/b.ini" --local --data "$tmp/none.txt" --steps 1
cond() { test "$status" -eq 2 && err_has "$tmp/none.txt"; }
check "--data of a missing file: exit 2 naming it" cond
"$bin/zmq-splitlearn-mkmodel" -o "$tmp/small" --n-layer 2 --n-embd 32 --n-head 2 --n-positions 32 --seed 3 >/dev/null
"$bin/zmq-splitlearn-split" "$tmp/small" --splits 1 -o "$tmp/small-parts" --topology "$tmp/small.ini" \
    --port $((port + 8)) >/dev/null
: >"$tmp/empty.txt"
run_tool train "$tmp/small.ini" --data "$tmp/empty.txt" --steps 1
cond() { test "$status" -ne 0 && err_has "$tmp/empty.txt is empty" && err_has "at least 32 + 1 tokens"; }
check "an empty data file: named, with what it needs" cond
echo "just a few words here" >"$tmp/tiny.txt"
run_tool train "$tmp/small.ini" --data "$tmp/tiny.txt" --seq-len 4 --steps 1
check "messages read like English: '1 sequence'" out_has "1 sequence of 4"

# the loss plot: what gnuplot is told (a stand-in records it), then a real plot at an odd path
mkdir -p "$tmp/fakebin"
printf '#!/bin/sh\ncat > "%s/gnuplot-script"\n' "$tmp" >"$tmp/fakebin/gnuplot"
chmod +x "$tmp/fakebin/gnuplot"
odd="$tmp/it's \$HOME \"q\""
for i in $(seq 200); do echo "Line $i: the quick brown fox jumps over the lazy dog."; done >"$tmp/text.txt"
PATH="$tmp/fakebin:$PATH" run_tool train "$tmp/small.ini" --data "$tmp/text.txt" --batch 2 --seq-len 16 --steps 4 \
    --lr 2e-3 --eval-every 2 --save-dir "$odd"
gp="$tmp/gnuplot-script"
check "the plot's title: data, lr, batch" grep -q "^set title 'text.txt: lr 0.002, batch 2 x 16' noenhanced$" "$gp"
cond() { grep -q "^set xtics 1$" "$gp" && grep -q "^set format x '%.0f'$" "$gp"; }
check "integer step tics" cond
check "margins keep the last eval point inside the frame" grep -q "^set offsets graph 0.03, graph 0.03" "$gp"
check "paths with a quote and \$ are quoted for gnuplot, no shell" \
    grep -qF "set output '$tmp/it''s \$HOME \"q\"/loss.png'" "$gp"
if command -v gnuplot >/dev/null; then
    rm -rf "$odd"
    run_tool train "$tmp/small.ini" --data "$tmp/text.txt" --batch 2 --seq-len 16 --steps 4 --save-dir "$odd"
    check "gnuplot draws loss.png at that path" test "$(head -c 4 "$odd/loss.png" | tail -c 3)" = "PNG"
else
    echo "note: gnuplot is not installed: the real plot is not drawn (make deps installs it)" >&2
    failed=$((failed + 1))
fi

# ---- §4: zmq-splitlearn-info ----
run_tool info "$tmp/sp" --verify
cond() { test "$status" -eq 0 && out_has "split of 3 parts" && out_has "part trunk1: trunk, layers \[1,3), f32, 47232 parameters" && test "$(grep -c '(verified)' "$tmp/out")" -eq 3; }
check "info on a split: parts, layers, dtype, parameters, SHA-256 verified" cond
check "... and the tensors' shapes (blocks once)" out_has "h.\*.attn.c_attn.weight *F32  \[48, 144\] x 2 blocks"
run_tool info "$tmp/host-a/ck"
cond() { test "$status" -eq 0 && out_has "checkpoint of 3 parts, step 5, loss"; }
check "info on a checkpoint: its step and loss" cond
run_tool info "$fixtures/tiny-a" --json
cond() { test "$status" -eq 0 && out_has '"n_layer":[[:space:]]*6'; }
check "info --json on a model: config.n_layer" cond
run_tool info "$(ls "$tmp"/sp/trunk/*_metadata.json)"
cond() { test "$status" -eq 0 && out_has ": part$"; }
check "info on one part" cond
cp -r "$tmp/sp" "$tmp/sp-bad"
printf 'x' | dd of="$(ls "$tmp"/sp-bad/top/*.safetensors)" bs=1 seek=2000 conv=notrunc 2>/dev/null
run_tool info "$tmp/sp-bad" --verify
cond() { test "$status" -eq 1 && out_has "DOES NOT MATCH"; }
check "info --verify on a changed part: exit 1, DOES NOT MATCH" cond
run_tool info "$tmp/no-such"
check "info on a missing path: exit 2" test "$status" -eq 2

# ---- §3: make demo and plain make ----
(cd "$root" && SL_BIN="$bin" MODEL="$fixtures/tiny-a" PORT=$((port + 12)) PROMPT="Hello" TOKENS=3 tools/demo.sh) \
    >"$tmp/demo.log" 2>&1
last=$?
cond() { test $last -eq 0 && grep -q "(6 layers) at 2,4" "$tmp/demo.log" && grep -q "127.0.0.1:$((port + 12))" "$root/build/demo/pipeline.ini"; }
check "demo MODEL=... splits from the model's n_layer (6: at 2,4) and generates" cond
(cd "$root" && SL_BIN="$bin" MODEL=/nonexistent/model PORT=$((port + 12)) tools/demo.sh) >"$tmp/demo2.log" 2>&1
last=$?
cond() { test $last -ne 0 && grep -q "zmq-splitlearn-info: /nonexistent/model" "$tmp/demo2.log"; }
check "demo with a bad MODEL prints the tool's own message" cond
check "plain make installs what is missing first, then builds in a sub-make" \
    bash -c "make --no-print-directory -C '$root' -n all 2>/dev/null | head -n 2 | tr '\n' ' ' | grep -q 'pkg-config --exists .* make --no-print-directory build'"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
