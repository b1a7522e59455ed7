#!/usr/bin/env bash
# test_launch.sh — zmq-splitlearn-launch on this machine, no root needed: its command line and
# exit codes, a node started through a run prefix that behaves like ssh (the command joined and
# given to a shell, signals not passed on), the lifeline (a launcher killed with SIGKILL leaves no
# node), supervision (restart with back-off; without restart the others keep serving), start
# failures and timeouts, and split --host-dirs' refusals. Ends with "N passed, N failed".
set -u
bin=$(cd "${SL_BIN:-bin}" && pwd)
fixtures=$(cd "${SL_FIXTURES:-../shared/fixtures}" && pwd)
tmp=$(mktemp -d /tmp/sl-test-launch-XXXXXX)
launcher=""
# Nodes of this test still running (they all work below $tmp).
leftovers() {
    for p in $(pgrep -f zmq-splitlearn-node); do
        case $(readlink "/proc/$p/cwd" 2>/dev/null) in "$tmp"*) echo "$p" ;; esac
    done
}
cleanup() {
    [ -n "$launcher" ] && kill -KILL "$launcher" 2>/dev/null
    for p in $(leftovers); do kill -KILL "$p" 2>/dev/null; done
    [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
passed=0 failed=0
check() { # check "what" command...
    local what=$1
    shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)) && echo "FAIL: $what" >&2; fi
}
status_is() { # status_is N command...
    local want=$1
    shift
    "$@" >/dev/null 2>&1
    [ $? -eq "$want" ]
}
wait_file() { for _ in $(seq 300); do [ -f "$1" ] && return 0; sleep 0.1; done; return 1; }
wait_log() { for _ in $(seq 300); do grep -q -- "$2" "$1" && return 0; sleep 0.1; done; return 1; }
wait_gone() { for _ in $(seq 100); do [ -z "$(leftovers)" ] && return 0; sleep 0.1; done; return 1; }
launch() { "$bin/zmq-splitlearn-launch" "$@"; }
node_pid() { # node_pid NAME: the node process (not a shell that runs it) of this test
    for p in $(pgrep -f "^$bin/zmq-splitlearn-node .* $1\$"); do
        case $(readlink "/proc/$p/cwd" 2>/dev/null) in "$tmp"*) echo "$p" ;; esac
    done
}

# The command line
check "--help exits 0 and documents the exit codes" bash -c "'$bin/zmq-splitlearn-launch' --help | grep -q '2 usage or topology error'"
check "--version" test "$(launch --version)" = "zmq-splitlearn-launch (zmq-splitlearn) $(sed -n 's/.*SL_VERSION "\(.*\)"/\1/p' lib/version.h)"
launch --bogus >/dev/null 2>"$tmp/err"
check "a bad option: exit 2 ($?)" test $? -eq 2
check "... one error line and 'see --help'" test "$(wc -l <"$tmp/err")" -eq 2 -a "$(tail -n 1 "$tmp/err")" = \
    "see zmq-splitlearn-launch --help"
check "no topology: exit 2" status_is 2 launch
printf '[pipeline]\nparts = x\n[host.a]\nrun = ssh "a\n' >"$tmp/bad.ini"
check "a topology error: exit 2, naming file:line" bash -c \
    "'$bin/zmq-splitlearn-launch' '$tmp/bad.ini' 2>&1 | grep -q 'bad.ini:4: .ssh \"a.: a \" quote is not closed'"

# A pipeline: bottom and top here, the trunk on "gpu1", reached through a fake ssh that, like
# ssh, joins its arguments into one command line for a shell and passes no signal on.
# Ports as tests/test_cli.sh takes them: the range of tests/check.h, offset by this shell's pid.
port_const() { sed -n "s/^#define $1 \([0-9]*\)$/\1/p" "$(dirname "$0")/check.h"; }
port=$((${SL_TEST_PORT_BASE:-$(port_const CHECK_PORT_BASE)} + $$ % $(port_const CHECK_PORT_SLOTS) * $(port_const CHECK_PORT_SPAN)))
mkdir -p "$tmp/conf"
cat >"$tmp/fake-ssh" <<'EOF'
#!/bin/sh
# fake-ssh HOST COMMAND...: the command joined by blanks, run by a shell, waited for; SIGTERM ignored
trap '' TERM
shift
sh -c "$*"
EOF
chmod +x "$tmp/fake-ssh"
topo=$tmp/conf/topo.ini
cat >"$topo" <<EOF
[pipeline]
parts   = parts
timeout = 10

[host.gpu1]
run = $tmp/fake-ssh gpu1
dir = $tmp/parts/hosts/gpu1
bin = $bin

[node.bottom]
role   = bottom
layers = 0-2
listen = tcp://127.0.0.1:$port

[node.trunk1]
role    = trunk
layers  = 2-4
listen  = tcp://127.0.0.1:$((port + 1))
host    = gpu1

[node.top]
role   = top
layers = 4-5
listen = tcp://127.0.0.1:$((port + 2))
EOF
"$bin/zmq-splitlearn-split" "$fixtures/tiny-b" --splits 2,4 -o "$tmp/parts" --host-dirs "$topo" >/dev/null
check "split --host-dirs: gpu1 holds only the trunk's part file" \
    test "$(cd "$tmp/parts/hosts/gpu1" && find . -name '*.safetensors')" = "./parts/trunk/tiny-b_2-4_trunk1.safetensors"
check "... and every part's metadata, the index and the topology" test -f "$tmp/parts/hosts/gpu1/topo.ini" -a \
    "$(cd "$tmp/parts/hosts/gpu1" && find . -name '*_metadata.json' -o -name split.json | wc -l)" -eq 4
check "split --host-dirs again into the same directory: refused (exit 2)" status_is 2 "$bin/zmq-splitlearn-split" \
    "$fixtures/tiny-b" --splits 2,4 -o "$tmp/parts" --host-dirs "$topo"
# With security = curve: each host gets every public certificate the topology names and the key
# pairs of its own nodes only (never another host's, nor a client's or trainer's).
mkdir -p "$tmp/conf/certs"
for name in bottom trunk1 top alice carol; do "$bin/zmq-splitlearn-keygen" $name -o "$tmp/conf/certs" >/dev/null; done
sed 's|^parts .*|parts = parts\nsecurity = curve\ncerts = certs\nclients = alice\ntrainers = carol|;
     s|^layers *= 0-2$|&\ncert = bottom|; s|^layers *= 2-4$|&\ncert = trunk1|; s|^layers *= 4-5$|&\ncert = top|' \
    "$topo" >"$tmp/conf/curve.ini"
certs_of() { (cd "$tmp/curve/hosts/$1/certs" && ls | tr '\n' ' '); }
check "split --host-dirs with security = curve: done" status_is 0 "$bin/zmq-splitlearn-split" "$fixtures/tiny-b" \
    --splits 2,4 -o "$tmp/curve" --host-dirs "$tmp/conf/curve.ini"
check "gpu1's certs: every public certificate and trunk1's key pair only ($(certs_of gpu1))" \
    test "$(certs_of gpu1)" = "alice.cert bottom.cert carol.cert top.cert trunk1.cert trunk1.cert_secret "
check "localhost's certs: every public certificate, the bottom's and the top's key pairs ($(certs_of localhost))" \
    test "$(certs_of localhost)" = "alice.cert bottom.cert bottom.cert_secret carol.cert top.cert top.cert_secret trunk1.cert "
check "the key pairs placed are as the originals, mode 0600" bash -c \
    "cmp -s '$tmp/conf/certs/trunk1.cert_secret' '$tmp/curve/hosts/gpu1/certs/trunk1.cert_secret' &&
     test \"\$(stat -c %a '$tmp/curve/hosts/gpu1/certs/trunk1.cert_secret')\" = 600"
check "no key pair anywhere but its node's host (3 in all)" \
    test "$(find "$tmp/curve/hosts" -name '*.cert_secret' | wc -l)" -eq 3
sed 's|^certs .*|certs = ../certs|' "$tmp/conf/curve.ini" >"$tmp/conf/curve-climbing.ini"
check "split --host-dirs with certs outside the host's directory: refused naming file:line" bash -c \
    "'$bin/zmq-splitlearn-split' '$fixtures/tiny-b' --splits 2,4 -o '$tmp/p3' --host-dirs '$tmp/conf/curve-climbing.ini' 2>&1 |
     grep -q 'curve-climbing.ini:[0-9]*: certs = ../certs: with --host-dirs the certs path must be relative'"
rm "$tmp/conf/certs/carol.cert"
check "split --host-dirs with a public certificate missing: refused naming it" bash -c \
    "'$bin/zmq-splitlearn-split' '$fixtures/tiny-b' --splits 2,4 -o '$tmp/p4' --host-dirs '$tmp/conf/curve.ini' 2>&1 |
     grep -q 'certs/carol.cert: no such certificate'"
sed 's|^parts .*|parts = ../parts|' "$topo" >"$tmp/conf/climbing.ini"
check "split --host-dirs with parts outside the host's directory: refused naming file:line" bash -c \
    "'$bin/zmq-splitlearn-split' '$fixtures/tiny-b' --splits 2,4 -o '$tmp/p2' --host-dirs '$tmp/conf/climbing.ini' 2>&1 |
     grep -q 'climbing.ini:2: parts = ../parts: with --host-dirs the parts path must be relative'"
# Here the bottom and top take the parts as the file says (beside it, or from the working
# directory): the launcher runs from $tmp, where parts/ is the whole split.
ids=625,684,897,578,775,833,225
ref=$("$bin/zmq-splitlearn-run" "$fixtures/tiny-b" --ids $ids --max-new-tokens 6 --temperature 1 --seed 3 --print-ids --quiet)
start() { # start LOG [launcher options]: the launcher in the background from $tmp, $launcher
    local log=$1
    shift
    rm -f "$tmp/ready"
    (cd "$tmp" && exec "$bin/zmq-splitlearn-launch" "$@" --ready-file "$tmp/ready") >"$log" 2>&1 &
    launcher=$!
}
send_ok() {
    local got
    got=$(cd "$tmp" && "$bin/zmq-splitlearn-send" "$topo" --ids $ids --max-new-tokens 6 --temperature 1 --seed 3 \
        --print-ids --quiet --timeout 10 2>&1)
    [ "$got" = "$ref" ]
}
start "$tmp/a.log" "$topo"
check "three nodes ready, one through the fake ssh" wait_file "$tmp/ready"
check "... 'launch: all 3 nodes ready'" grep -q '^launch: all 3 nodes ready$' "$tmp/a.log"
check "... logs prefixed host/node" grep -q '^\[gpu1/trunk1\] .*trunk1: ready on' "$tmp/a.log"
check "... the trunk in its host's dir" test "$(readlink "/proc/$(node_pid trunk1)/cwd")" = "$tmp/parts/hosts/gpu1"
check "send equals run" send_ok
# SIGKILL to the launcher: the lifelines close, every node stops (the fake ssh ignores SIGTERM)
{ kill -KILL $launcher && wait $launcher; } 2>/dev/null # without bash's "Killed" line
launcher=""
check "a launcher killed with SIGKILL leaves no node behind (the lifeline)" wait_gone

# Without restart: a dead node is named, the others keep serving; the stop is clean
start "$tmp/b.log" "$topo"
wait_file "$tmp/ready"
kill -KILL "$(node_pid trunk1)"
check "a node killed: named, not restarted, the others left" \
    wait_log "$tmp/b.log" '^launch: gpu1/trunk1 exited with status 137; not restarted (restart = no); 2 of 3 nodes left$'
check "... the launcher and the other nodes go on" test "$(leftovers | wc -l)" -eq 2 -a -d "/proc/$launcher"
kill -TERM $launcher
wait $launcher
check "... SIGTERM then stops the rest: exit 0 ($?)" test $? -eq 0
launcher=""
check "... leaving nothing" wait_gone

# restart = yes: started again with back-off, logged with the count, and serving exactly
sed -i '/^\[node.trunk1\]/a restart = yes' "$topo"
start "$tmp/c.log" "$topo"
wait_file "$tmp/ready"
kill -KILL "$(node_pid trunk1)"
check "restart 1 after 0.5 s" wait_log "$tmp/c.log" '^launch: gpu1/trunk1 ready again (restart 1)$'
kill -KILL "$(node_pid trunk1)"
check "restart 2 after 1 s: the back-off doubles" wait_log "$tmp/c.log" '^launch: gpu1/trunk1 ready again (restart 2)$'
check "... both logged with their delay" test "$(grep -c 'restarting it in 0.5 s (restart 1)$\|restarting it in 1 s (restart 2)$' \
    "$tmp/c.log")" -eq 2
check "the restarted trunk serves exactly" send_ok
kill -INT $launcher
wait $launcher
check "SIGINT stops too: exit 0 ($?)" test $? -eq 0
launcher=""
check "... leaving nothing" wait_gone

# A topology whose parts and certificates are relative to its own directory (CURVE on), launched
# from elsewhere: the nodes here get the directories this launcher resolved
mkdir -p "$tmp/certs"
for name in bottom trunk1 top client; do "$bin/zmq-splitlearn-keygen" $name -o "$tmp/certs" >/dev/null; done
sed '/^\[host.gpu1\]/,/^$/d; /^host *= gpu1/d; s|^parts .*|parts = ../parts\nsecurity = curve\ncerts = ../certs\nclients = client|' \
    "$topo" >"$tmp/conf/local.ini"
for name in bottom trunk1 top; do sed -i "/^\[node.$name\]/a cert = $name" "$tmp/conf/local.ini"; done
rm -f "$tmp/ready"
(cd / && exec "$bin/zmq-splitlearn-launch" "$tmp/conf/local.ini" --ready-file "$tmp/ready") >"$tmp/g.log" 2>&1 &
launcher=$!
check "parts and certs beside the topology, the launcher elsewhere: ready" wait_file "$tmp/ready"
check "... serving exactly, with CURVE" bash -c "test \"\$('$bin/zmq-splitlearn-send' '$tmp/conf/local.ini' --ids $ids \
    --max-new-tokens 6 --temperature 1 --seed 3 --print-ids --quiet --timeout 10 \
    --cert '$tmp/certs/client.cert_secret')\" = '$ref'"
kill -TERM $launcher
wait $launcher
launcher=""

# --only / --host, and the English of one node
start "$tmp/d.log" "$topo" --only trunk1
check "--only: 'launch: all 1 node ready'" wait_log "$tmp/d.log" '^launch: all 1 node ready$'
check "... and one line for each node not started" test "$(grep -c 'not started here (--only)$' "$tmp/d.log")" -eq 2
kill -TERM $launcher
wait $launcher
launcher=""
check "--host of no node: exit 2" status_is 2 launch "$topo" --host nowhere
check "--only of no node: exit 2" status_is 2 launch "$topo" --only nobody

# Start failures: no node program in bin (exit 127 there), a node that never gets ready
sed "s|^bin = .*|bin = $tmp/empty|" "$topo" >"$tmp/conf/nobin.ini"
mkdir -p "$tmp/empty"
start "$tmp/e.log" "$tmp/conf/nobin.ini"
wait $launcher
check "a node that cannot start: exit 1 ($?)" test $? -eq 1
launcher=""
check "... named, with the likely cause" grep -q '^launch: gpu1/trunk1 exited with status 127 (no zmq-splitlearn-node in bin there?) before it was ready; stopping the others$' "$tmp/e.log"
check "... the others stopped" wait_gone
mkdir -p "$tmp/slow"
printf '#!/bin/sh\ncat >/dev/null\n' >"$tmp/slow/zmq-splitlearn-node" # until its lifeline closes
chmod +x "$tmp/slow/zmq-splitlearn-node"
sed "s|^bin = .*|bin = $tmp/slow|" "$topo" >"$tmp/conf/slow.ini"
start "$tmp/f.log" "$tmp/conf/slow.ini" --start-timeout 1
wait $launcher
check "a node not ready in --start-timeout: exit 1 ($?)" test $? -eq 1
launcher=""
check "... named" grep -q '^launch: gpu1/trunk1 not ready after 1 s$' "$tmp/f.log"
check "... and stopped with the others" wait_gone

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
