#!/usr/bin/env bash
# kjv-corpus.sh DIR — the embedded default model's corpus: the King James Bible (public domain)
# from Debian's bible-kjv, verse numbers and blank lines removed (book and chapter headings stay as
# lines of their own), into DIR/kjv.txt, DIR/train.txt (the first 95% of its lines) and
# DIR/eval.txt (the last 5%: from Colossians 2:16 to the end of Revelation), the held-out text of
# the default model's eval loss and perplexity. `bible` wraps each verse at $COLUMNS - 1 columns:
# COLUMNS is fixed at 80 (what an unset COLUMNS gives) so that the lines, and so the cut, are the
# same from every terminal. eval.txt's SHA-256 with bible-kjv 4.38 (Debian 12):
# bb0e6fd5951ee07f4950ced4e4f5a9ce344433d9527f107372af61d98f285817.
set -euo pipefail
dir=$1
mkdir -p "$dir"
COLUMNS=80 bible gen1:1-rev22:21 | sed -E 's/^ +[0-9]+ //; /^$/d' >"$dir/kjv.txt"
total=$(wc -l <"$dir/kjv.txt")
keep=$((total * 95 / 100))
head -n "$keep" "$dir/kjv.txt" >"$dir/train.txt"
tail -n +"$((keep + 1))" "$dir/kjv.txt" >"$dir/eval.txt"
