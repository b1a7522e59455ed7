#!/usr/bin/env bash
# model-info.sh — writes models/default/INFO.md from a finished `make default-model` run: corpus
# and licence, the command, losses from the training log, samples, and the SHA-256 of every file.
set -euo pipefail
bin=${SL_BIN:-bin}
out=${1:-models/default}
work=${2:-build/default-model}
log=$out/train_log.csv
steps=$(tail -n 1 "$log" | cut -d, -f1)
first=$(sed -n 2p "$log" | cut -d, -f2)
last50=$(tail -n 50 "$log" | awk -F, '{s += $2} END {printf "%.3f", s / NR}')
first_eval=$(awk -F, 'NR > 1 && $3 != "" {print $1 " " $3; exit}' "$log")
last_eval=$(awk -F, 'NR > 1 && $3 != "" {e = $1 " " $3} END {print e}' "$log")
minutes=$(tail -n 1 "$log" | awk -F, '{printf "%.0f", $6 / 60}')
params=$(sed -n 's/.*"parameters":[[:space:]]*\([0-9]*\).*/\1/p' "$out"/parts/*/*_metadata.json | awk '{s += $1} END {print s}')

# Samples through the pipeline itself, from the merged F32 checkpoint (same weights, unrounded).
greedy=$("$bin/zmq-splitlearn-run" "$work/merged" "And God said unto Moses," --max-new-tokens 40 2>/dev/null | tr '\n' ' ')
sampled=$("$bin/zmq-splitlearn-run" "$work/merged" "In the beginning" --max-new-tokens 40 --temperature 0.8 \
    --top-k 40 --seed 1 2>/dev/null | tr '\n' ' ')

{
    cat <<EOT
# The embedded default model

A small GPT-2 trained with this project's own split-learning pipeline, so that \`make demo\`
shows text that reads like English. F16 parts of a 3-stage split (bottom [0,1), trunk [1,3),
top [3,4)) that \`config/default.ini\` runs as is.

| | |
|---|---|
| shape | GPT-2: 4 layers, 128 wide, 4 heads, 256 positions, vocabulary 50257 (GPT-2's tokenizer, \`models/gpt2-vocab\`) |
| parameters | $params (untied: the bottom's \`wte\` and the top's \`lm_head.weight\` were trained apart) |
| corpus | the King James Bible, from Debian's \`bible-kjv\` (\`bible gen1:1-rev22:21\`), verse numbers removed; the last 5% of lines (from Colossians 2:16 to the end of Revelation; `tools/kjv-corpus.sh`) held out for the eval loss |
| corpus licence | the KJV text is in the public domain (its copyright has expired; see /usr/share/doc/bible-kjv-text/copyright) |
| weights licence | released with this project; made only from the public-domain text above and a random initialisation |
| command | \`make default-model\` (tools/default-model.sh); the exact commands are below |
| training | $steps steps of 16 x 128 tokens ($(( steps * 2048 )) tokens, about $(( steps * 2048 / 1000000 )) passes over the corpus' 1.0M), $minutes minutes on the 2-core build machine |
| loss | first step $first; mean of the last 50 steps $last50 (train) |
| eval loss | ${first_eval#* } at step ${first_eval% *}; ${last_eval#* } at step ${last_eval% *} (an untrained model: ln 50257 = 10.8) |

![train and eval loss](loss.png)

The commands \`make default-model\` ran (the corpus prepared as in tools/default-model.sh):

\`\`\`sh
$(cat "$work/commands.txt")
\`\`\`

Greedy, \`zmq-splitlearn-run build/default-model/merged "And God said unto Moses," --max-new-tokens 40\`:

> And God said unto Moses,$greedy

Sampled, \`--temperature 0.8 --top-k 40 --seed 1\`, from "In the beginning":

> In the beginning$sampled

## Files

| file | SHA-256 |
|---|---|
EOT
    (cd "$out" && find . -type f ! -name INFO.md | sort | while read -r f; do
        printf '| %s | %s |\n' "${f#./}" "$(sha256sum "$f" | cut -d' ' -f1)"
    done)
} > "$out/INFO.md"
echo "wrote $out/INFO.md"
