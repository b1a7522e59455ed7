#!/usr/bin/env bash
# bench-hosts.sh — the several-hosts and security benchmarks of `make bench` (run by tools/bench.sh):
# 4 stages of the 124M-shape model (split at 2,6,10: bottom, trunks mid1 and mid2, top; each node two
# pinned threads), one client, greedy, a 64-token prompt and 32 new tokens:
#  (a) prefill and decode across 3 network namespaces (bottom and top in one, a trunk in each of the
#      others, joined by a bridge in a namespace of its own, as tests/test_multihost.sh; needs
#      root) vs the same 4 stages on tcp loopback vs the monolithic model in one process;
#  (d) the loopback pipeline with security = curve; (a) and (d) in interleaved rounds (BENCH_ROUNDS,
#      default 3 x BENCH_RUNS = 21, one generation of each configuration per round, each round in
#      another order): medians, and ratios as the median over rounds of the ratio within a round
#      (a shared VM's speed moves between phases: a ratio of neighbours in time is what holds);
#      decode is each generation's median time between two tokens;
#  (b) bytes per token on each link with f32, f16 and bf16 activations (and f32 with CURVE): the
#      kernel's TCP counters (ss) of each node's connections around generations of 2 and 34 tokens;
#  (c) recovery from a trunk killed with SIGKILL (launcher restart = yes): from the kill to the
#      next token, and the node's own start time (exec to its ready line) measured alone.
# Usage: tools/bench-hosts.sh MODEL_DIR. Prints Markdown tables. BENCH_PORT: first loopback port.
set -uo pipefail
bin=$(cd "${SL_BIN:-bin}" && pwd)
model=$(cd "$1" && pwd)
runs=${BENCH_RUNS:-7}
rounds=${BENCH_ROUNDS:-$((3 * runs))}
port=${BENCH_PORT:-5811}
probe_bin=$bin/zmq-splitlearn-bench-pipeline
tmp=$(mktemp -d /tmp/sl-bench-hosts-XXXXXX)
. "$(dirname "${BASH_SOURCE[0]}")/netns.sh"
ns=sl-bh$$ # the namespaces: $ns-client, $ns-server1, $ns-server2, $ns-bridge
hosts=(client server1 server2)
# The trunks are mid1 and mid2, not trunk1 and trunk2: what looks for a test's trunk1 by name
# (pgrep -f) must not find them.
names=(bottom mid1 mid2 top) roles=(bottom trunk trunk top) layers=(0-2 2-6 6-10 10-12)
declare -A launchers

root=true
why_not=""
if [ "$(id -u)" != 0 ]; then
    root=false why_not="not root"
elif ! ip netns list >/dev/null 2>&1; then
    root=false why_not="no 'ip netns'"
fi

stop() { # NAME: stops that pipeline's launcher (which stops its nodes on every host)
    local pid=${launchers[$1]:-}
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    unset "launchers[$1]"
}
cleanup() {
    for name in "${!launchers[@]}"; do stop "$name"; done
    if $root; then
        for h in "${hosts[@]}"; do
            for p in $(ip netns pids "$ns-$h" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        done
        sl_netns_down "$ns" "${hosts[@]}"
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() {
    echo "bench-hosts.sh: $*" >&2
    exit 1
}

# topology FILE PIPELINE_LINES ENDPOINTS [HOSTS]: the 4 stages; ENDPOINTS and HOSTS are
# comma-separated, one per node; with security = curve in PIPELINE_LINES each node gets its cert.
topology() {
    local file=$1 pipeline=$2 endpoints node_hosts
    IFS=, read -ra endpoints <<<"$3"
    IFS=, read -ra node_hosts <<<"${4:-}"
    {
        printf '[pipeline]\n%s\n' "$pipeline"
        for i in 0 1 2 3; do
            printf '\n[node.%s]\nrole = %s\nlayers = %s\nlisten = %s\nthreads = 2\npin = yes\n' \
                "${names[i]}" "${roles[i]}" "${layers[i]}" "${endpoints[i]}"
            [ -z "${node_hosts[i]:-}" ] || printf 'host = %s\n' "${node_hosts[i]}"
            [[ $pipeline != *curve* ]] || printf 'cert = %s\n' "${names[i]}"
        done
    } >"$file"
}
loopback() { # FIRST_PORT: the 4 loopback endpoints
    echo "tcp://127.0.0.1:$1,tcp://127.0.0.1:$(($1 + 1)),tcp://127.0.0.1:$(($1 + 2)),tcp://127.0.0.1:$(($1 + 3))"
}
declare -A first_port=([loop]=$port [curve]=$((port + 4)) [f16]=$((port + 8)) [bf16]=$((port + 12)))

launch() { # NAME TOPOLOGY: starts its launcher and waits until every node is ready
    "$bin/zmq-splitlearn-launch" "$2" --ready-file "$tmp/$1.ready" >"$tmp/$1.log" 2>&1 &
    launchers[$1]=$!
    for _ in $(seq 1200); do
        [ -f "$tmp/$1.ready" ] && return 0
        kill -0 "${launchers[$1]}" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$tmp/$1.log" >&2
    fail "pipeline $1 did not start"
}

# probe CONFIG OPTIONS...: one zmq-splitlearn-bench-pipeline --probe of CONFIG (mono: --probe-model).
probe() {
    local cfg=$1
    shift
    case $cfg in
    mono) "$probe_bin" --probe-model "$model" --threads 2 "$@" ;;
    hosts) ip netns exec "$ns-client" "$probe_bin" --probe "$tmp/parts/hosts/client/hosts.ini" "$@" ;;
    curve) "$probe_bin" --probe "$tmp/curve.ini" --cert "$tmp/certs/bench.cert_secret" "$@" ;;
    *) "$probe_bin" --probe "$tmp/$cfg.ini" "$@" ;;
    esac
}
probe_failed() { # CONFIG
    [ "$1" = mono ] || tail -n 30 "$tmp/$1.log" >&2
    fail "probe $1 failed"
}
values() { # NAME FILE: NAME's values in FILE's probe lines, one a line (the i-th: round i)
    awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) print $(i + 1) }' "$2" 2>/dev/null
}
middle() { # the median of the numbers on standard input ("nan" when none)
    sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'
}
median() { values "$1" "$2" | middle; } # NAME FILE
paired() { # NAME A B: the median over rounds of A's NAME / B's NAME in the same round
    paste -d' ' <(values "$1" "$tmp/$2.times") <(values "$1" "$tmp/$3.times") |
        awk '$1 > 0 && $2 > 0 { printf "%.4f\n", $1 / $2 }' | middle | awk '{ if ($1 == "nan") print "n/a"; else printf "%.3f", $1 }'
}
# The share of the CPUs busy (steal included) over the next half second, in percent.
cpu_busy() {
    local b1 t1 b2 t2
    read -r b1 t1 < <(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    sleep 0.5
    read -r b2 t2 < <(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    echo $((100 * (b2 - b1) / (t2 - t1 > 0 ? t2 - t1 : 1)))
}
# Waits up to 5 s for the rest of the machine to leave the CPUs alone (under 25% busy: our own
# pipelines are idle now); counts the probes that start on a busy machine anyway.
busy_probes=0
quiet() {
    for _ in $(seq 10); do [ "$(cpu_busy)" -lt 25 ] && return; done
    busy_probes=$((busy_probes + 1))
}

# ---- the model's parts, certificates, topologies ----
mkdir -p "$tmp/conf" "$tmp/certs"
for name in "${names[@]}" bench; do "$bin/zmq-splitlearn-keygen" "$name" -o "$tmp/certs" >/dev/null || fail "keygen"; done
topology "$tmp/loop.ini" "parts = $tmp/parts
restart = yes
timeout = 60" "$(loopback "${first_port[loop]}")"
topology "$tmp/curve.ini" "parts = $tmp/parts
restart = yes
timeout = 60
security = curve
certs = $tmp/certs
clients = bench" "$(loopback "${first_port[curve]}")"
for dtype in f16 bf16; do
    topology "$tmp/$dtype.ini" "parts = $tmp/parts
restart = yes
timeout = 60
activations = $dtype" "$(loopback "${first_port[$dtype]}")"
done
host_sections=$(for h in "${hosts[@]}"; do
    printf '\n[host.%s]\nrun = ip netns exec %s-%s\ndir = %s/parts/hosts/%s\n' "$h" "$ns" "$h" "$tmp" "$h"
done)
topology "$tmp/conf/hosts.ini" "parts = parts
timeout = 60
restart = yes
$host_sections" \
    "tcp://10.98.0.1:5701,tcp://10.98.0.2:5702,tcp://10.98.0.3:5703,tcp://10.98.0.1:5704" "client,server1,server2,client"
"$bin/zmq-splitlearn-split" "$model" --splits 2,6,10 -o "$tmp/parts" --host-dirs "$tmp/conf/hosts.ini" >/dev/null ||
    fail "split"

configs=(mono loop curve)
if $root; then
    # addresses 10.98.0.1-3, only in the namespaces
    sl_netns_up "$ns" 10.98.0 "${hosts[@]}" || fail "cannot make the network namespaces"
    configs+=(hosts)
    launch hosts "$tmp/conf/hosts.ini"
fi
launch loop "$tmp/loop.ini"
launch curve "$tmp/curve.ini"

# ---- (a) and (d): interleaved rounds, one generation of each configuration per round ----
for r in $(seq "$rounds"); do
    for k in "${!configs[@]}"; do
        cfg=${configs[(k + r) % ${#configs[@]}]}
        quiet
        probe "$cfg" --runs 1 --prompt 64 --decode 32 >>"$tmp/$cfg.times" || probe_failed "$cfg"
    done
done
row() { # LABEL CONFIG BASE
    if [ "$2" = hosts ] && ! $root; then
        echo "| $1 | skipped: $why_not | | | |"
        return
    fi
    printf '| %s | %.1f | %.2f | %s | %s |\n' "$1" "$(median prefill_ms "$tmp/$2.times")" \
        "$(median decode_ms "$tmp/$2.times")" "$(paired prefill_ms "$2" "$3")" "$(paired decode_ms "$2" "$3")"
}
echo "| 124M in 4 stages (2,6,10; 2 pinned threads per node; one client, greedy; $rounds interleaved rounds of one generation each: medians; a ratio is the median over the rounds of the ratio within a round) | prefill 64 tokens, ms | decode, ms/token (median time between two tokens) | prefill ratio | decode ratio |"
echo "|---|---|---|---|---|"
row "monolithic (one process, as zmq-splitlearn-run)" mono mono
row "4 stages, tcp loopback, vs monolithic" loop mono
row "4 stages across 3 network namespaces (veth, bridge), vs monolithic" hosts mono
row "... across namespaces vs loopback (target: decode ≤ 1.05)" hosts loop
row "4 stages, tcp loopback, security = curve, vs without (target: decode ≤ 1.05)" curve loop
echo "| probes that started while other work kept the CPUs over 25% busy for 5 s | $busy_probes of $((rounds * ${#configs[@]})) | | | |"
stray=$(cat "$tmp"/{loop,curve,hosts}.log 2>/dev/null | grep -ac ' ready again ')
[ "$stray" = 0 ] || echo "| nodes restarted during the rounds (killed by something else; those rounds re-sent their context) | $stray | | | |"

# ---- (b) bytes per token on each link, from the TCP counters of each node's connections ----
snapshot() { echo "sleep 0.2; ss -tinH state established >$1"; } # after the end message settled
# link_bytes BEFORE AFTER PORT: what the node listening on PORT received and sent over its
# established connections between two snapshots: "received sent".
link_bytes() {
    awk -v port="$3" '
        FNR == 1 { sign = FILENAME == ARGV[1] ? -1 : 1 }
        /^[0-9]/ { n = split($3, a, ":"); here = a[n] == port; next }
        here {
            for (i = 1; i <= NF; i++) {
                split($i, kv, ":")
                if (kv[1] == "bytes_received") got += sign * kv[2]
                if (kv[1] == "bytes_sent") sent += sign * kv[2]
            }
            here = 0
        }
        END { print got + 0, sent + 0 }' "$1" "$2"
}
declare -A per_token per_prompt
measure_bytes() { # CONFIG: per link, bytes towards the top / back, per decoded token and per prompt
    local cfg=$1 d i p
    for d in 2 34; do
        probe "$cfg" --runs 1 --prompt 64 --decode "$d" --before "$(snapshot "$tmp/$cfg-$d.before")" \
            --after "$(snapshot "$tmp/$cfg-$d.after")" >/dev/null || fail "probe $cfg for bytes failed"
    done
    for i in 0 1 2 3; do
        p=$((first_port[$cfg] + i))
        read -r up2 down2 < <(link_bytes "$tmp/$cfg-2.before" "$tmp/$cfg-2.after" "$p")
        read -r up34 down34 < <(link_bytes "$tmp/$cfg-34.before" "$tmp/$cfg-34.after" "$p")
        per_token[$cfg,$i]=$(awk -v a="$up2" -v b="$up34" -v c="$down2" -v d="$down34" \
            'BEGIN { printf "%.0f / %.0f", (b - a) / 32, (d - c) / 32 }')
        per_prompt[$cfg,$i]=$(awk -v a="$up2" -v b="$up34" -v c="$down2" -v d="$down34" \
            'BEGIN { printf "%.0f / %.0f", a - (b - a) / 32, c - (d - c) / 32 }')
    done
}
echo
if command -v ss >/dev/null; then
    launch f16 "$tmp/f16.ini"
    launch bf16 "$tmp/bf16.ini"
    for cfg in loop f16 bf16 curve; do measure_bytes "$cfg"; done
    stop f16
    stop bf16
    links=("client → bottom (token ids)" "bottom → mid1 (activations: 768 values)" "mid1 → mid2 (768 values)"
        "mid2 → top (768 values)")
    echo "| bytes on each link (TCP payload: ZMTP frames of msgpack), towards the top / back (acks, the result) | f32 | f16 | bf16 | f32, security = curve |"
    echo "|---|---|---|---|---|"
    for i in 0 1 2 3; do
        echo "| per decoded token: ${links[i]} | ${per_token[loop,$i]} | ${per_token[f16,$i]} | ${per_token[bf16,$i]} | ${per_token[curve,$i]} |"
    done
    for i in 0 1 2 3; do
        echo "| per 64-token prompt: ${links[i]%% (*} | ${per_prompt[loop,$i]} | ${per_prompt[f16,$i]} | ${per_prompt[bf16,$i]} | ${per_prompt[curve,$i]} |"
    done
else
    echo "| bytes per token on each link | skipped: no ss (Debian: apt-get install iproute2) |"
fi

# ---- (c) recovery from a killed trunk ----
rec=loop rec_topo=$tmp/loop.ini where="tcp loopback ($why_not for namespaces)"
if $root; then rec=hosts rec_topo=$tmp/conf/hosts.ini where="across the 3 namespaces"; fi
victim_pid() {
    if $root; then
        ip netns pids "$ns-server1"
        return
    fi
    for p in $(pgrep -P "${launchers[loop]}"); do
        [[ $(tr '\0' ' ' <"/proc/$p/cmdline") == *" mid1 " ]] && echo "$p"
    done
}
stop curve
for k in 1 2 3; do
    [ "$k" = 1 ] || launch "$rec" "$rec_topo" # a fresh launcher: its first back-off again
    pid=$(victim_pid)
    [ -n "$pid" ] || fail "no mid1 process to kill"
    probe "$rec" --runs 1 --prompt 64 --decode 24 --kill "$pid" --kill-after 8 >>"$tmp/recovery.times" ||
        fail "probe with a kill failed"
    stop "$rec"
done
stop loop
# The ms from exec to mid1's ready line, started alone as its launcher starts it.
node_start_ms() {
    local t0 t1=0 line
    local cmd=("$bin/zmq-splitlearn-node" "$tmp/loop.ini" mid1)
    if $root; then
        cmd=(ip netns exec "$ns-server1" env -C "$tmp/parts/hosts/server1" "$bin/zmq-splitlearn-node" hosts.ini mid1)
    fi
    t0=$EPOCHREALTIME
    coproc NODE { exec "${cmd[@]}" 2>&1; }
    while IFS= read -r line <&"${NODE[0]}"; do
        if [[ $line == *"mid1: ready on"* ]]; then
            t1=$EPOCHREALTIME
            break
        fi
    done
    kill -TERM "$NODE_PID"
    wait "$NODE_PID"
    [ "$t1" != 0 ] || fail "mid1 did not start alone: ${cmd[*]}"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "start_ms %.1f\n", (b > 0 ? (b - a) * 1000 : -1) }'
}
for _ in 1 2 3; do node_start_ms >>"$tmp/start.times"; done
recovery=$(median recovery_ms "$tmp/recovery.times")
start=$(median start_ms "$tmp/start.times")
echo
echo "| recovery from the trunk mid1 [2,6) killed with SIGKILL after the 8th token, $where; launcher restart = yes (first back-off 0.5 s); median of 3 | ms |"
echo "|---|---|"
echo "| from the kill to the next token (the client re-sends the 72-token context) | $recovery |"
echo "| mid1's start alone, exec to its ready line (median of 3) | $start |"
echo "| recovery minus the start (target ≤ 2000) | $(awk -v a="$recovery" -v b="$start" 'BEGIN { printf "%.0f", a - b }') |"

verdict() { # VALUE LIMIT: met / not met
    awk -v v="$1" -v l="$2" 'BEGIN { if (v == "n/a" || v == "") print "not measured"; else print (v + 0 <= l + 0 ? "met" : "NOT met") }'
}
across=$(paired decode_ms hosts loop)
$root || across=n/a
curve_ratio=$(paired decode_ms curve loop)
beyond_start=$(awk -v a="$recovery" -v b="$start" 'BEGIN { printf "%.0f", a - b }')
echo
echo "| target (issues 12 and 13) | measured | |"
echo "|---|---|---|"
echo "| decode across hosts ≤ 1.05 × loopback | $across | $(verdict "$across" 1.05) |"
echo "| recovery ≤ 2 s + the node's start time | $recovery ms = $start ms start + $beyond_start ms | $(verdict "$beyond_start" 2000) |"
echo "| CURVE decode ≤ 1.05 × without | $curve_ratio | $(verdict "$curve_ratio" 1.05) |"
