#!/usr/bin/env bash
# test_leakage.sh — zmq-splitlearn-leakage's command line: --help, --version, exit codes, the
# --json contract (attacks.NAME.recovery and top5 in 0..1), the topology's defences taken into
# account, --all-cuts; and the meter is a real attack on the embedded default model (a trained
# 4-layer GPT-2, GPT-2's vocabulary) and held-out text: the search recovers >= 95% of the tokens at
# a 1-layer cut without defence and less and less as sigma grows, the labels of a training batch
# come back from the top's gradient. Ends with "N passed, N failed".
set -u
bin=$(cd "${SL_BIN:-bin}" && pwd)
tmp=$(mktemp -d /tmp/sl-test-leakage-XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
. "$(dirname "$0")/check.sh"
# The number after "NAME":{"recovery": (or "top5") in compact JSON, "" when absent.
field() { # field JSON attack key
    tr -d ' \t\n' <<<"$1" | grep -o "\"$2\":{\"recovery\":[^}]*" | grep -o "\"$3\":[0-9.e+-]*" | head -1 | cut -d: -f2
}
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a + 0 >= b + 0) }'; }
below() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a + 0 < b + 0) }'; }

leak="$bin/zmq-splitlearn-leakage"
root=$(pwd)
text="$tmp/rev.txt"
# Held out of the default model's training (the last 5% of the KJV): Revelation 21:1-5.
printf '%s\n' "And I saw a new heaven and a new earth: for the first heaven and the first earth were passed" \
    "away; and there was no more sea. And I John saw the holy city, new Jerusalem, coming down from God" \
    "out of heaven, prepared as a bride adorned for her husband. And I heard a great voice out of heaven" \
    "saying, Behold, the tabernacle of God is with men, and he will dwell with them, and they shall be" \
    "his people, and God himself shall be with them, and be their God." > "$text"
sed "s|^parts .*|parts = $root/models/default/parts|" config/default.ini > "$tmp/clean.ini"

check "--help exits 0" status_is 0 "$leak" --help
check "--version names the program" grep -q "^zmq-splitlearn-leakage [0-9]" <("$leak" --version)
check "no arguments: usage error 2" status_is 2 "$leak"
check "no --data: 2" status_is 2 "$leak" "$tmp/clean.ini"
check "a bad attack name: 2" status_is 2 "$leak" "$tmp/clean.ini" --data "$text" --attack guess
check "probe alone without --probe-data: 2" status_is 2 "$leak" "$tmp/clean.ini" --data "$text" --attack probe
check "a missing topology: 1" status_is 1 "$leak" "$tmp/none.ini" --data "$text"
check "a missing text: 1" status_is 1 "$leak" "$tmp/clean.ini" --data "$tmp/none.txt"

json=$("$leak" "$tmp/clean.ini" --data "$text" --attack search --tokens 64 --json)
rec=$(field "$json" search recovery) top5=$(field "$json" search top5)
check "--json: attacks.search.recovery >= 0.95 at the 1-layer cut without defence ($rec)" at_least "$rec" 0.95
check "--json: attacks.search.top5 >= recovery ($top5)" at_least "$top5" "$rec"
check "--json: no epsilon without noise" bash -c "! grep -q epsilon_per_row <<<'$json'"

# Clip 44 (the rows' median norm at this cut): recovery falls as sigma grows.
previous=$rec
for sigma in 0.05 0.1 0.25; do
    sed "/^layers = 0-1/a clip = 44\nnoise = $sigma" "$tmp/clean.ini" > "$tmp/sigma.ini"
    r=$(field "$("$leak" "$tmp/sigma.ini" --data "$text" --attack search --tokens 64 --json)" search recovery)
    check "sigma $sigma: search recovery $r <= $previous" awk -v a="$r" -v b="$previous" 'BEGIN { exit !(a != "" && a + 0 <= b + 0) }'
    previous=$r
done
check "sigma 0.25 stops the search ($previous vs $rec)" below "$previous" "$(awk -v r="$rec" 'BEGIN { print r - 0.5 }')"
json=$("$leak" "$tmp/clean.ini" --data "$text" --attack label --batch 1 --seq-len 64 --json)
label=$(field "$json" label recovery)
check "the labels of a training batch leak through the top's gradient ($label)" at_least "$label" 0.5

sed '/^layers = 0-1/a clip = 50\nnoise = 0.5' "$tmp/clean.ini" > "$tmp/noisy.ini"
json=$("$leak" "$tmp/noisy.ini" --data "$text" --attack search --tokens 40 --json)
noisy=$(field "$json" search recovery)
check "the bottom's noise is simulated: recovery $noisy < 0.3" below "$noisy" 0.3
check "--json: the defence's epsilon per row" grep -q '"epsilon_per_row"' <<<"$json"

out=$("$leak" "$tmp/clean.ini" --data "$text" --attack nn --tokens 24 --all-cuts --json)
cuts=$(tr -d ' \t\n' <<<"$out" | grep -o '"cut":[0-9]*' | sort -u | wc -l)
check "--all-cuts: a result per cut 1..3 ($cuts cut numbers)" test "$cuts" -eq 3
text_out=$("$leak" "$tmp/clean.ini" --data "$text" --attack label --batch 1 --seq-len 32)
check "text output: the label attack's line" grep -qE '^label +[0-9.]+% +[0-9.]+%' <<<"$text_out"
check "text output: an example next to the original" grep -q 'recovered' <<<"$text_out"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
