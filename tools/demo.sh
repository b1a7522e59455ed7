#!/usr/bin/env bash
# demo.sh — `make demo`: launches a pipeline locally, sends a prompt through it, streams the
# answer, and stops the nodes. Without MODEL it runs the embedded default model (a small GPT-2
# trained on the King James Bible, models/default); MODEL=... (an HF GPT-2 directory, a hub cache
# entry or a repo id: what the tools accept) is split first, at points chosen from its n_layer
# (three parts; two for a 2-layer model). PROMPT="..." sets the prompt, PORT=N the first of the
# local ports (default 5701; the parts use N, N+1, N+2). A failure shows the failing program's
# own message and the command that failed.
set -euo pipefail
trap 'echo "demo: failed: $BASH_COMMAND" >&2' ERR
bin=${SL_BIN:-bin}
dir=build/demo
prompt=${PROMPT:-"And God said unto Moses,"}
tokens=${TOKENS:-32}
port=${PORT:-5701}
mkdir -p "$dir"

# Split points for a model of $1 layers: thirds (at least one layer each), or one point for two.
split_points() {
    local layers=$1 a b
    if [ "$layers" -lt 2 ]; then
        echo "demo: the model has $layers layer: a pipeline needs at least 2 (a bottom and a top)" >&2
        return 1
    fi
    if [ "$layers" -eq 2 ]; then echo 1; return; fi
    a=$((layers / 3 > 0 ? layers / 3 : 1))
    b=$((2 * layers / 3 > a ? 2 * layers / 3 : a + 1))
    echo "$a,$b"
}

model=${MODEL:-}
topology=$dir/pipeline.ini
if [ -z "$model" ] && [ -f models/default/parts/split.json ]; then
    echo "== the embedded default model (models/default: 4 layers, 128 wide, trained on the KJV Bible)"
    sed -e "s#^parts = .*#parts = $(pwd)/models/default/parts#" -e "s#:5701\$#:$port#" \
        -e "s#:5702\$#:$((port + 1))#" -e "s#:5703\$#:$((port + 2))#" config/default.ini > "$topology"
else
    if [ -z "$model" ]; then
        model=$dir/random-gpt2
        echo "== no default model and no MODEL: a small random GPT-2 (its text is gibberish)"
        [ -f "$model/model.safetensors" ] ||
            "$bin/zmq-splitlearn-mkmodel" -o "$model" --n-layer 4 --n-embd 128 --n-head 4 --n-positions 256 --seed 1
    fi
    info=$("$bin/zmq-splitlearn-info" "$model" --json)
    layers=$(sed -n 's/^[[:space:]]*"n_layer":[[:space:]]*\([0-9]*\).*/\1/p' <<<"$info" | head -n 1)
    splits=$(split_points "$layers")
    echo "== splitting $model ($layers layers) at $splits into $dir/parts"
    "$bin/zmq-splitlearn-split" "$model" --splits "$splits" -o "$dir/parts" --topology "$topology" --port "$port" \
        --force
fi

echo "== launching the pipeline ($topology)"
ready=$dir/ready
rm -f "$ready"
"$bin/zmq-splitlearn-launch" "$topology" --ready-file "$ready" > "$dir/nodes.log" 2>&1 &
launcher=$!
trap 'kill -TERM $launcher 2>/dev/null; wait $launcher 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    [ -f "$ready" ] && break
    if ! kill -0 $launcher 2>/dev/null; then
        echo "demo: the pipeline did not start; the nodes said:" >&2
        cat "$dir/nodes.log" >&2
        exit 1
    fi
    sleep 0.1
done
[ -f "$ready" ] || { echo "demo: the pipeline was not ready in 60 s; see $dir/nodes.log" >&2; exit 1; }
sed 's/^/   /' "$dir/nodes.log"

echo "== zmq-splitlearn-send: \"$prompt\""
printf '%s' "$prompt"
"$bin/zmq-splitlearn-send" "$topology" "$prompt" --max-new-tokens "$tokens" --temperature 0.8 --top-k 40 --seed 1
echo "== done; stopping the nodes (their log: $dir/nodes.log)"
