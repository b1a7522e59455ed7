# netns.sh — network namespaces for the tests and benchmarks that play several hosts (sourced, not
# run): hosts joined by a bridge that lives in a namespace of its own, so that nothing of theirs
# exists in this machine's namespace and no packet can leave it. Needs root and `ip netns`.

# sl_netns_up PREFIX NET HOST...: a bridge br0 without address in PREFIX-bridge; for the i-th HOST
# a namespace PREFIX-HOST whose eth0 (a veth into the bridge) has the address NET.i/24.
sl_netns_up() {
    local prefix=$1 net=$2 i=1 h
    shift 2
    ip netns add "$prefix-bridge" && ip -n "$prefix-bridge" link add br0 type bridge &&
        ip -n "$prefix-bridge" link set br0 up || return 1
    for h in "$@"; do
        ip netns add "$prefix-$h" &&
            ip link add eth0 netns "$prefix-$h" type veth peer name "port$i" netns "$prefix-bridge" &&
            ip -n "$prefix-bridge" link set "port$i" master br0 up &&
            ip -n "$prefix-$h" addr add "$net.$i/24" dev eth0 &&
            ip -n "$prefix-$h" link set eth0 up && ip -n "$prefix-$h" link set lo up || return 1
        i=$((i + 1))
    done
}

# sl_netns_down PREFIX HOST...: deletes the namespaces and the bridge's (what still runs in them
# loses its network; the caller stops its processes first).
sl_netns_down() {
    local prefix=$1 h
    shift
    for h in "$@" bridge; do ip netns del "$prefix-$h" 2>/dev/null; done
}
