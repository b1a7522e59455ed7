#!/usr/bin/env bash
# bench.sh — `make bench`: makes the GPT-2 124M-shape model (once, with zmq-splitlearn-mkmodel),
# then prints Markdown tables: decode and prefill through the runner with the weights in F32, F16,
# BF16 and Q8_0 against their floors and a STREAM triad (zmq-splitlearn-bench, one run of
# interleaved rounds), splitting and loading parts; the 3-stage pipeline against the whole model;
# the kernels alone; every format's memory in nodes and in zmq-splitlearn-run
# (tools/bench-rss.sh); then tools/bench-hosts.sh: 4 stages across network namespaces, bytes per
# link, recovery, CURVE.
# The figures go to build/bench/results.md as well. BENCH_RUNS sets the repetitions (default 7).
set -euo pipefail
bin=${SL_BIN:-bin}
dir=build/bench
runs=${BENCH_RUNS:-7}
mkdir -p "$dir"
model=$dir/gpt2-124m
if [ ! -f "$model/model.safetensors" ]; then
    echo "making the 124M-shape model in $model (once)..." >&2
    "$bin/zmq-splitlearn-mkmodel" -o "$model" --seed 1 >&2
fi

# Split: median wall time of $runs runs (each rewrites the parts and hashes everything).
split_times=()
for _ in $(seq "$runs"); do
    out=$("$bin/zmq-splitlearn-split" "$model" --splits 2,10 -o "$dir/parts-124m" --force | grep -v "^removed the split")
    split_times+=("$(sed -n 's/.* in \([0-9.]*\) s.*/\1/p' <<<"$out")")
done
split_median=$(printf '%s\n' "${split_times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')

{
    echo "Command: \`make bench\` (tools/bench.sh; model: zmq-splitlearn-mkmodel --seed 1, GPT-2 124M shape, F32)"
    echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%d)"
    echo
    "$bin/zmq-splitlearn-bench" "$model" --runs "$runs" --parts "$dir/parts-124m" --threads 2
    echo "| split 124M at 2,10 into 3 parts, F32, SHA-256 of all (median of $runs) | $(awk -v s="$split_median" 'BEGIN {printf "%.0f", s * 1000}') | | |"
    echo
    "$bin/zmq-splitlearn-bench-pipeline" "$model" "$dir/parts-124m" --runs "$runs" --threads 2
    echo
    "$bin/zmq-splitlearn-bench-kernels" --rounds "$runs" --threads 2
    echo
    tools/bench-rss.sh "$model"
    echo
    tools/bench-hosts.sh "$model"
} | tee "$dir/results.md"
