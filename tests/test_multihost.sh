#!/usr/bin/env bash
# test_multihost.sh — several hosts for real: three network namespaces (client, server1, server2)
# joined by a bridge that lives in a namespace of its own, so that nothing of the test exists in
# this machine's namespace and no packet can leave it. The client runs bottom and top, each
# server one trunk, each host's directory holds only its own parts (split --host-dirs), and ONE
# zmq-splitlearn-launch starts them all through `run = ip netns exec ...`. Checks: generation
# equals zmq-splitlearn-run (ids equal, logits within 1e-6), three training steps through the
# trunks equal --local, a trunk killed with SIGKILL is restarted by the launcher and serves
# exactly again, and the launcher's stop leaves no process behind. Needs root and `ip netns`
# (CI is root); otherwise it says why and counts nothing. Ends with "N passed, N failed".
set -u
bin=$(cd "${SL_BIN:-bin}" && pwd)
fixtures=$(cd "${SL_FIXTURES:-../shared/fixtures}" && pwd)
passed=0 failed=0
check() { # check "what" command...
    local what=$1
    shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)) && echo "FAIL: $what" >&2; fi
}
skip() {
    echo "test_multihost.sh: SKIPPED, nothing checked: $1"
    echo "0 passed, 0 failed"
    exit 0
}
[ "$(id -u)" = 0 ] || skip "making network namespaces needs root (CI runs make test as root)"
command -v ip >/dev/null && ip netns list >/dev/null 2>&1 || skip "no 'ip netns' here (Debian: apt-get install iproute2)"

. "$(dirname "${BASH_SOURCE[0]}")/../tools/netns.sh"
ns=sl-mh$$ # the namespaces' prefix: $ns-client, $ns-server1, $ns-server2, $ns-bridge
hosts=(client server1 server2)
tmp=$(mktemp -d /tmp/sl-test-multihost-XXXXXX)
launcher=""
# Nodes of this test still running: those in its namespaces, and any working below $tmp.
leftovers() {
    for h in "${hosts[@]}"; do ip netns pids "$ns-$h" 2>/dev/null; done
    for p in $(pgrep -f zmq-splitlearn-node); do
        case $(readlink "/proc/$p/cwd" 2>/dev/null) in "$tmp"/*) echo "$p" ;; esac
    done
}
cleanup() {
    if [ -n "$launcher" ]; then
        kill -TERM "$launcher" 2>/dev/null
        wait "$launcher" 2>/dev/null
    fi
    for p in $(leftovers | sort -u); do kill -KILL "$p" 2>/dev/null; done
    sl_netns_down "$ns" "${hosts[@]}"
    [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# The network: a bridge with no address in $ns-bridge; each host a veth into it, made directly
# in the namespaces (never in this one), with an address of 10.99.0.0/24.
if ! sl_netns_up "$ns" 10.99.0 "${hosts[@]}"; then
    check "making the namespaces and their bridge (as root with ip netns)" false
    echo "$passed passed, $failed failed"
    exit 1
fi
check "this machine's namespace has no address or route of the test" \
    bash -c "! ip addr | grep -q 10.99.0 && ! ip route | grep -q 10.99.0"
check "the bridge's namespace has no address" bash -c "! ip -n '$ns-bridge' addr | grep -q 'inet '"

# The topology: bottom and top on the client, a trunk on each server; relative parts, found in
# each host's dir. It lives apart from every parts directory.
mkdir -p "$tmp/conf"
topo=$tmp/conf/topo.ini
cat >"$topo" <<EOF
[pipeline]
parts   = parts
timeout = 20
restart = yes
train   = yes

[host.client]
run = ip netns exec $ns-client
dir = $tmp/parts/hosts/client

[host.server1]
run = ip netns exec $ns-server1
dir = $tmp/parts/hosts/server1

[host.server2]
run = ip netns exec '$ns-server2'
dir = $tmp/parts/hosts/server2

[node.bottom]
role   = bottom
layers = 0-1
listen = tcp://10.99.0.1:5701
host   = client

[node.trunk1]
role   = trunk
layers = 1-3
listen = tcp://10.99.0.2:5702
host   = server1

[node.trunk2]
role   = trunk
layers = 3-4
listen = tcp://10.99.0.3:5703
host   = server2

[node.top]
role   = top
layers = 4-5
listen = tcp://10.99.0.1:5704
host   = client
EOF
"$bin/zmq-splitlearn-split" "$fixtures/tiny-b" --splits 1,3,4 -o "$tmp/parts" --host-dirs "$topo" >"$tmp/split.log"
held() { (cd "$tmp/parts/hosts/$1/parts" && find . -name '*.safetensors' | sort | tr '\n' ' '); }
check "client holds only bottom and top ($(held client))" \
    test "$(held client)" = "./bottom/tiny-b_1-3-4_bottom.safetensors ./top/tiny-b_1-3-4_top.safetensors "
check "server1 holds only trunk1 ($(held server1))" test "$(held server1)" = "./trunk/tiny-b_1-3-4_trunk1.safetensors "
check "server2 holds only trunk2 ($(held server2))" test "$(held server2)" = "./trunk/tiny-b_1-3-4_trunk2.safetensors "

# Waits until FILE exists (up to 30 s).
wait_file() { for _ in $(seq 300); do [ -f "$1" ] && return 0; sleep 0.1; done; return 1; }
# Waits until the log LOG holds TEXT (up to 30 s).
wait_log() { for _ in $(seq 300); do grep -q -- "$2" "$1" && return 0; sleep 0.1; done; return 1; }
# Whether two --logits files have the same header and values within 1e-6.
logits_close() {
    local n1 n2
    n1=$(od -An -tu8 -N8 "$1" | tr -d ' ') n2=$(od -An -tu8 -N8 "$2" | tr -d ' ')
    [ "$n1" = "$n2" ] && cmp -s <(head -c $((8 + n1)) "$1") <(head -c $((8 + n2)) "$2") || return 1
    paste <(od -An -v -tf4 -w4 -j $((8 + n1)) "$1") <(od -An -v -tf4 -w4 -j $((8 + n2)) "$2") |
        awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > worst) worst = d; n++ }
             END { if (n < 1000) { print "too few logits: " n; exit 1 }
                   if (worst > 1e-6) { print "max |diff| " worst; exit 1 } }'
}
on_client() { ip netns exec "$ns-client" "$@"; }
# The client's copy of the topology (from --host-dirs): its parts, beside it, give send the model's
# vocabulary and length, as on a real client.
client_topo=$tmp/parts/hosts/client/topo.ini

# 1. One launcher for everything; send (in the client's namespace) equals run.
ids=625,684,897,578,775,833,225
gen=(--ids $ids --max-new-tokens 8 --temperature 1 --seed 5 --print-ids --quiet)
"$bin/zmq-splitlearn-run" "$fixtures/tiny-b" "${gen[@]}" --logits "$tmp/run.st" >"$tmp/run.ids"
"$bin/zmq-splitlearn-launch" "$topo" --ready-file "$tmp/ready" >"$tmp/launch.log" 2>&1 &
launcher=$!
check "the launcher starts 4 nodes on 3 hosts" wait_file "$tmp/ready"
check "... and says so" grep -q '^launch: all 4 nodes ready$' "$tmp/launch.log"
check "... each log line prefixed host/node" grep -q '^\[server2/trunk2\] .* trunk2: ready on tcp://10.99.0.3:5703' \
    "$tmp/launch.log"
check "... each node in its host's namespace" \
    test "$(ip netns pids "$ns-server1" | wc -l)" = 1 -a "$(ip netns pids "$ns-client" | wc -l)" = 2
on_client "$bin/zmq-splitlearn-send" "$client_topo" "${gen[@]}" --logits "$tmp/send.st" >"$tmp/send.ids" 2>"$tmp/send.err"
check "send across hosts: the ids of run ($(cat "$tmp/send.ids") vs $(cat "$tmp/run.ids"))" \
    test -s "$tmp/run.ids" -a "$(cat "$tmp/send.ids")" = "$(cat "$tmp/run.ids")"
check "send across hosts: the logits of run within 1e-6" logits_close "$tmp/run.st" "$tmp/send.st"

# 2. A trunk killed with SIGKILL: the launcher starts it again (restart = yes), it serves exactly.
trunk2=$(ip netns pids "$ns-server2")
kill -KILL $trunk2
check "the launcher restarts the killed trunk" wait_log "$tmp/launch.log" '^launch: server2/trunk2 ready again (restart 1)$'
check "... after naming it" grep -q '^launch: server2/trunk2 was killed by signal 9; restarting it in' "$tmp/launch.log"
check "... as a new process" test -n "$(ip netns pids "$ns-server2")" -a "$(ip netns pids "$ns-server2")" != "$trunk2"
on_client "$bin/zmq-splitlearn-send" "$client_topo" "${gen[@]}" --logits "$tmp/send2.st" >"$tmp/send2.ids" 2>"$tmp/send2.err"
check "after the restart: the ids of run" test "$(cat "$tmp/send2.ids")" = "$(cat "$tmp/run.ids")"
check "after the restart: the logits of run within 1e-6" logits_close "$tmp/run.st" "$tmp/send2.st"

# 3. The launcher's stop leaves nothing behind, on any host.
nodes=$(leftovers | sort -u | tr '\n' ' ')
kill -TERM $launcher
wait $launcher
check "the launcher exits 0 on SIGTERM (status $?)" test $? -eq 0
launcher=""
check "... having stopped all 4 nodes (${nodes})" test "$(wc -w <<<"$nodes")" -eq 4 -a -z "$(leftovers)"
check "... each through its lifeline or SIGTERM, cleanly" test "$(grep -c ': stopping: ' "$tmp/launch.log")" -ge 4

# 4. Training: only the trunks are launched (--host), the trainer runs bottom and top in the
# client's namespace from the client's directory (its own parts only); the losses equal --local.
train_ids=215,845,160,857,612,114,43,444,35,141,514,970,466,808,917,823,629,441,514,266,496,379,247,993
(cd "$tmp" && "$bin/zmq-splitlearn-train" "$topo" --local --ids $train_ids --steps 3 >"$tmp/local.log")
"$bin/zmq-splitlearn-launch" "$topo" --host server1 --host server2 --ready-file "$tmp/ready2" \
    >"$tmp/launch2.log" 2>&1 &
launcher=$!
check "--host: the trunks' launcher is ready" wait_file "$tmp/ready2"
check "... saying which nodes it does not start" \
    test "$(grep -c '^launch: client/\(bottom\|top\) not started here (--host)$' "$tmp/launch2.log")" -eq 2
(cd "$tmp/parts/hosts/client" && on_client "$bin/zmq-splitlearn-train" "$client_topo" --ids $train_ids --steps 3 \
    >"$tmp/remote.log" 2>"$tmp/remote.err")
check "three training steps across hosts equal --local ($(tr '\n' ' ' <"$tmp/remote.log"))" \
    test "$(grep -c '^step [123] loss' "$tmp/local.log")" -eq 3 -a "$(cat "$tmp/remote.log")" = "$(cat "$tmp/local.log")"
kill -TERM $launcher
wait $launcher
check "the trunks' launcher exits 0 on SIGTERM (status $?)" test $? -eq 0
launcher=""
check "... leaving nothing behind" test -z "$(leftovers)"

if [ "$failed" -ne 0 ]; then
    for f in launch.log send.err send2.err launch2.log remote.err; do
        echo "== $f" && tail -n 30 "$tmp/$f"
    done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
