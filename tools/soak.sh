#!/usr/bin/env bash
# soak.sh — `make soak`: splits a small model into 4 stages (tiny-b from ../shared/fixtures, or
# SOAK_MODEL with SOAK_SPLITS), launches them on loopback with restart = yes and runs
# zmq-splitlearn-soak against them for SOAK_SECONDS (default 90): 8 checked clients, abandoned
# sessions, malformed messages to every node, a trunk killed half-way. Exits with its status.
set -euo pipefail
bin=$(cd "${SL_BIN:-bin}" && pwd)
model=$(cd "${SOAK_MODEL:-../shared/fixtures/tiny-b}" && pwd)
splits=${SOAK_SPLITS:-1,3,4}
seconds=${SOAK_SECONDS:-90}
tmp=$(mktemp -d /tmp/sl-soak-XXXXXX)
launcher=""
cleanup() {
    if [ -n "$launcher" ]; then
        kill -TERM "$launcher" 2>/dev/null || true
        wait "$launcher" 2>/dev/null || true
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

"$bin/zmq-splitlearn-split" "$model" --splits "$splits" -o "$tmp/parts" >/dev/null
n_layer=$(grep -o '"n_layer": *[0-9]*' "$model/config.json" | grep -o '[0-9]*$')
bounds=(0 ${splits//,/ } "$n_layer")
[ ${#bounds[@]} -eq 5 ] || { echo "soak.sh: SOAK_SPLITS must make 4 stages (3 split points)" >&2; exit 2; }
# The trunks are mid1 and mid2, not trunk1 and trunk2: what looks for a test's trunk1 by name
# (pgrep -f) must not find them.
names=(bottom mid1 mid2 top) roles=(bottom trunk trunk top)
# Ports from 20000 + 4 * (pid mod 5000): apart from the tests' and other soaks'.
port=$((20000 + 4 * ($$ % 5000)))
{
    printf '[pipeline]\nparts = parts\ntimeout = 10\nidle_timeout = 5\nrestart = yes\n'
    for i in 0 1 2 3; do
        printf '\n[node.%s]\nrole = %s\nlayers = %d-%d\nlisten = tcp://127.0.0.1:%d\nthreads = 1\n' \
            "${names[i]}" "${roles[i]}" "${bounds[i]}" "${bounds[i + 1]}" $((port + i))
    done
} >"$tmp/soak.ini"
(cd "$tmp" && exec "$bin/zmq-splitlearn-launch" soak.ini --ready-file ready >launch.log 2>&1) &
launcher=$!
for _ in $(seq 300); do [ -f "$tmp/ready" ] && break; sleep 0.1; done
if [ ! -f "$tmp/ready" ]; then
    echo "soak.sh: the pipeline did not start:" >&2
    tail -n 20 "$tmp/launch.log" >&2
    exit 1
fi
status=0
"$bin/zmq-splitlearn-soak" "$tmp/soak.ini" "$model" --launcher "$launcher" --seconds "$seconds" || status=$?
echo "launcher's log: $(grep -c '' "$tmp/launch.log") lines, $(grep -c 'bad_message' "$tmp/launch.log") of them" \
    "bad_message refusals (nodes log a limited number a second); its own lines:"
grep '^launch: ' "$tmp/launch.log" | sed 's/^/  /'
exit $status
