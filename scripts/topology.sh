#!/usr/bin/env bash
# Builds or removes the anycast test topology of issue 6 in network namespaces:
# one router (the hub, running BIRD) with a veth to each of a client, a log node, a
# tern dns server and three edges; the edges share an anycast /32 on their `lo`.
#
#   scripts/topology.sh up [PREFIX]     create the namespaces and links; prints the plan
#   scripts/topology.sh down [PREFIX]   kill what runs in them and remove them
#   scripts/topology.sh plan [PREFIX]   print the plan only
#
# PREFIX (default "tern") starts every namespace name: PREFIX-router, PREFIX-client,
# PREFIX-log, PREFIX-dns, PREFIX-edge1..3 (tests/tests/topology.rs uses a unique one per
# run, e.g. tt1234a). `up` is idempotent: it first removes what `down` would. `down`
# removes every namespace whose name starts with "PREFIX-", after SIGKILLing the
# processes inside them. Needs root and iproute2; nothing touches the host's own
# namespace (the veths are created inside the namespaces, so host interface names
# never clash). Processes are started by whoever uses the topology, with
# `ip netns exec PREFIX-edge1 ...`: see edge-config/examples/topology/README.md.
#
# Addresses (10.77.0.0/16; every link a /24, the router .1, the other end .2):
#   client 10.77.1.2   log 10.77.2.2   dns 10.77.3.2
#   edge1 10.77.11.2   edge2 10.77.12.2   edge3 10.77.13.2
#   anycast 10.77.100.10/32 on each edge's lo, announced over BGP to the router
#   (AS 65000) by each edge's BIRD (AS 65001..65003); the router installs the best
#   path in its kernel table. Every namespace but the router routes default via it.
#
#          client ─┐            ┌─ edge1 (lo: 10.77.100.10)
#             log ─┼─ router ───┼─ edge2 (lo: 10.77.100.10)
#             dns ─┘  (BIRD)    └─ edge3 (lo: 10.77.100.10)
#
# The plan is printed as key=value lines, one per line, for scripts and the test
# harness to read (the one source of truth for names and addresses).
set -euo pipefail

cmd="${1:-}"
prefix="${2:-tern}"

if ! [[ "$prefix" =~ ^[A-Za-z0-9_]{1,12}$ ]]; then
    echo "topology.sh: PREFIX must be 1 to 12 letters, digits or '_' (got '$prefix')" >&2
    exit 2
fi

anycast=10.77.100.10
# name subnet-octet: every leaf namespace and the third octet of its link.
leaves=("client 1" "log 2" "dns 3" "edge1 11" "edge2 12" "edge3 13")

plan() {
    echo "prefix=$prefix"
    echo "anycast=$anycast"
    echo "router_ns=$prefix-router"
    for leaf in "${leaves[@]}"; do
        read -r name octet <<<"$leaf"
        echo "${name}_ns=$prefix-$name"
        echo "${name}_addr=10.77.$octet.2"
        echo "${name}_gateway=10.77.$octet.1"
    done
}

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "topology.sh: network namespaces need root" >&2
        exit 1
    fi
    if ! command -v ip >/dev/null 2>&1; then
        echo "topology.sh: 'ip' (iproute2) is missing" >&2
        exit 1
    fi
}

down() {
    local ns pids
    # `ip netns list` prints "NAME" or "NAME (id: N)".
    for ns in $(ip netns list | awk '{print $1}'); do
        case "$ns" in
        "$prefix"-*) ;;
        *) continue ;;
        esac
        pids="$(ip netns pids "$ns" 2>/dev/null || true)"
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086 # one pid per word
            kill -9 $pids 2>/dev/null || true
        fi
        ip netns delete "$ns" 2>/dev/null || true
    done
}

up() {
    down
    local router="$prefix-router"
    ip netns add "$router"
    ip -n "$router" link set dev lo up
    ip netns exec "$router" sysctl -qw net.ipv4.ip_forward=1
    local leaf name octet ns
    for leaf in "${leaves[@]}"; do
        read -r name octet <<<"$leaf"
        ns="$prefix-$name"
        ip netns add "$ns"
        ip -n "$ns" link set dev lo up
        # Created inside the router, the peer moved straight into the leaf.
        ip -n "$router" link add "to-$name" type veth peer name uplink netns "$ns"
        ip -n "$router" addr add "10.77.$octet.1/24" dev "to-$name"
        ip -n "$router" link set dev "to-$name" up
        ip -n "$ns" addr add "10.77.$octet.2/24" dev uplink
        ip -n "$ns" link set dev uplink up
        ip -n "$ns" route add default via "10.77.$octet.1"
        case "$name" in
        edge*) ip -n "$ns" addr add "$anycast/32" dev lo ;;
        esac
    done
}

case "$cmd" in
up)
    need_root
    up
    plan
    ;;
down)
    need_root
    down
    ;;
plan)
    plan
    ;;
*)
    echo "usage: topology.sh up|down|plan [PREFIX]" >&2
    exit 2
    ;;
esac
