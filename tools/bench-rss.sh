#!/usr/bin/env bash
# bench-rss.sh MODEL_DIR — part of `make bench`: the memory of every weight format. For each of
# f32, f16, bf16 and q8_0: MODEL_DIR (F32) split at 2,10 with `zmq-splitlearn-split --dtype FMT`,
# its three nodes started by zmq-splitlearn-launch (tcp loopback), one generation through them
# (zmq-splitlearn-send: a 64-token prompt, 32 new tokens), then each node's peak (VmHWM) and steady
# (VmRSS) resident memory against its part file's bytes + its KV cache's bytes + 20 MB; and
# `zmq-splitlearn-run MODEL_DIR --weights FMT` generating 128 tokens after the same prompt: its
# peak, and its steady RSS (the median of VmRSS sampled every 20 ms over the second half of the
# run) against the converted weights' bytes, the F32 file being released after the conversion.
# Prints Markdown tables. PORT sets the first of the 3 ports (default 5871).
set -euo pipefail
bin=${SL_BIN:-bin}
model=$1
dir=build/bench
port=${PORT:-5871}
prompt=64 new=32 run_new=128
ids=$(awk -v n=$prompt 'BEGIN { for (i = 0; i < n; i++) printf "%s%d", i ? "," : "", (i * 7919 + 13) % 50257 }')
mb() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
kb_of() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
json_int() { tr -d ' \t\n' <"$1" | grep -o "\"$2\":[0-9]*" | head -1 | cut -d: -f2; }

# The model's bytes in KB with its matrices (wte, the blocks' four; the head is wte) in format $1
# and the rest (wpe, LayerNorms, biases) in F32, from config.json.
model_kb() {
    tr -d ' \t\n' <"$model/config.json" | tr ',{}' '\n\n\n' | awk -F: -v f="$1" '
        { gsub(/"/, "", $1); v[$1] = $2 }
        END {
            C = v["n_embd"]; L = v["n_layer"]; V = v["vocab_size"]; P = v["n_positions"]
            I = v["n_inner"] ~ /^[0-9]+$/ ? v["n_inner"] : 4 * C
            mats = V * C + L * (4 * C * C + 2 * C * I)
            rest = P * C + L * (9 * C + I) + 2 * C
            bpw = f == "f32" ? 4 : f == "q8_0" ? 34 / 32 : 2
            printf "%d", (mats * bpw + rest * 4) / 1024
        }'
}

launcher=
trap '[ -n "$launcher" ] && kill "$launcher" 2>/dev/null; wait 2>/dev/null || true' EXIT

echo "| nodes of a 3-part split (2,10) after one generation ($prompt + $new tokens, KV f32) | part file MB | + KV + 20 MB | peak RSS MB | steady RSS MB | |"
echo "|---|---|---|---|---|---|"
for fmt in f32 f16 bf16 q8_0; do
    parts=$dir/parts-124m-$fmt topo=$dir/rss-$fmt.ini
    "$bin/zmq-splitlearn-split" "$model" --splits 2,10 --dtype "$fmt" -o "$parts" --topology "$topo" --port "$port" \
        --force >/dev/null
    sed -i '/^listen/a threads = 2\npin = yes' "$topo"
    rm -f "$topo.ready"
    "$bin/zmq-splitlearn-launch" "$topo" --ready-file "$topo.ready" >"$topo.log" 2>&1 &
    launcher=$!
    for _ in $(seq 600); do [ -f "$topo.ready" ] && break; sleep 0.05; done
    "$bin/zmq-splitlearn-send" "$topo" --ids "$ids" --max-new-tokens $new --ignore-eos --quiet >/dev/null
    for pid in $(pgrep -P "$launcher"); do
        node=$(tr '\0' '\n' <"/proc/$pid/cmdline" | awk 'f == 2 { print; exit } f { f++ } /^--topology-data$/ { f = 1 }')
        meta=$(ls "$parts"/*/*_"$node"_metadata.json)
        first=$(tr -d ' \t\n' <"$meta" | grep -o '"layers":\[[0-9]*,[0-9]*\]' | tr -dc '0-9,' | cut -d, -f1)
        last=$(tr -d ' \t\n' <"$meta" | grep -o '"layers":\[[0-9]*,[0-9]*\]' | tr -dc '0-9,' | cut -d, -f2)
        part_kb=$(($(json_int "$meta" bytes) / 1024))
        kv_kb=$(((last - first) * 2 * (prompt + new) * 768 * 4 / 1024))
        bound=$((part_kb + kv_kb + 20 * 1024))
        hwm=$(kb_of "$pid" VmHWM) rss=$(kb_of "$pid" VmRSS)
        echo "| $fmt $node [$first,$last) | $(mb $part_kb) | $(mb $bound) | $(mb "$hwm") | $(mb "$rss") | $([ "$hwm" -le "$bound" ] && echo met || awk -v k=$((hwm - bound)) 'BEGIN { printf "over by %.1f MB", k / 1024 }') |"
    done
    kill "$launcher"
    wait "$launcher" 2>/dev/null || true
    launcher=
done

echo
echo "| zmq-splitlearn-run --weights FMT ($prompt + $run_new tokens) | the model in FMT, MB | peak RSS MB | steady RSS MB | steady / weights |"
echo "|---|---|---|---|---|"
for fmt in f32 f16 bf16 q8_0; do
    "$bin/zmq-splitlearn-run" "$model" --ids "$ids" --max-new-tokens $run_new --ignore-eos --quiet --weights "$fmt" \
        --threads 2 --pin >/dev/null &
    pid=$! samples=() hwm=0
    while kill -0 "$pid" 2>/dev/null; do
        h=$(kb_of "$pid" VmHWM) r=$(kb_of "$pid" VmRSS) # VmHWM first: both exist when VmRSS does
        [ -n "$r" ] && samples+=("$r") && hwm=$((h > hwm ? h : hwm))
        sleep 0.02
    done
    wait "$pid"
    n=${#samples[@]}
    steady=$(printf '%s\n' "${samples[@]:$((n / 2))}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
    weights=$(model_kb "$fmt")
    echo "| $fmt | $(mb "$weights") | $(mb "$hwm") | $(mb "$steady") | $(awk -v s="$steady" -v w="$weights" 'BEGIN { printf "%.3f", s / w }') |"
done
