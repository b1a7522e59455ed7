#!/usr/bin/env bash
# demo.sh — `make demo`: splits a model into bottom / trunk / top, launches the three nodes
# locally, sends a prompt through them, streams the answer, and stops the nodes.
# MODEL=DIR uses your HF GPT-2 directory; without it a small random GPT-2 is made with
# zmq-splitlearn-mkmodel (its text is gibberish: it is untrained). PROMPT="..." sets the prompt.
set -euo pipefail
bin=${SL_BIN:-bin}
dir=build/demo
prompt=${PROMPT:-"In split learning, the client keeps the embedding and the head;"}
tokens=${TOKENS:-32}
port=${PORT:-5701}
mkdir -p "$dir"

model=${MODEL:-}
if [ -z "$model" ]; then
    model=$dir/random-gpt2
    if [ ! -f "$model/model.safetensors" ]; then
        echo "== no MODEL given: making a small random GPT-2 (4 layers, 128 wide, GPT-2 vocab) in $model"
        "$bin/zmq-splitlearn-mkmodel" -o "$model" --n-layer 4 --n-embd 128 --n-head 4 --n-positions 256 --seed 1
    fi
fi
layers=$(sed -n 's/.*"n_layer": *\([0-9]*\).*/\1/p' "$model/config.json" 2>/dev/null | head -n 1)
layers=${layers:-4}
a=$(( layers / 3 > 0 ? layers / 3 : 1 ))
b=$(( 2 * layers / 3 > a ? 2 * layers / 3 : a + 1 ))
echo "== splitting $model at $a,$b into $dir/parts"
"$bin/zmq-splitlearn-split" "$model" --splits "$a,$b" -o "$dir/parts" --topology "$dir/pipeline.ini" --port "$port"

echo "== launching the pipeline ($dir/pipeline.ini)"
ready=$dir/ready
rm -f "$ready"
"$bin/zmq-splitlearn-launch" "$dir/pipeline.ini" --ready-file "$ready" > "$dir/nodes.log" 2>&1 &
launcher=$!
trap 'kill -TERM $launcher 2>/dev/null; wait $launcher 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    [ -f "$ready" ] && break
    if ! kill -0 $launcher 2>/dev/null; then
        echo "the pipeline did not start:" >&2
        cat "$dir/nodes.log" >&2
        exit 1
    fi
    sleep 0.1
done
[ -f "$ready" ] || { echo "the pipeline was not ready in 60 s; see $dir/nodes.log" >&2; exit 1; }
sed 's/^/   /' "$dir/nodes.log"

echo "== zmq-splitlearn-send: \"$prompt\""
printf '%s' "$prompt"
"$bin/zmq-splitlearn-send" "$dir/pipeline.ini" "$prompt" --max-new-tokens "$tokens"
echo "== done; stopping the nodes (their log: $dir/nodes.log)"
