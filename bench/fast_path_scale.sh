#!/usr/bin/env bash
# Many fast-path endpoints (not a test): connects N endpoints (default 1,000) to one internal
# macvlan network of a private daemon, one `uvlan network connect` after the other, with
# `--fast-path on` and `off`, and prints per connect and disconnect time, the daemon's
# descriptors per endpoint, its RSS and the fast path's maps (type, sizes, memlock, from the
# daemon's /proc/PID/fdinfo). Numbers are printed, never asserted. Root; namespaces `uvfps*`
# it creates and deletes only. The network is IPv6-only on 2001:db8::/64
# (`--ipv4=false --ipv6`); with FAMILY=4 it is IPv4-only on 192.0.2.0/24, 198.51.100.0/24
# and 203.0.113.0/24, which hold 750 endpoints at most. The endpoint namespaces solicit no
# routers (KERNEL_RS=1: the kernel's default), as in bench/scale.sh.
#
# With GAP (seconds, e.g. 0.2), each command is timed alone and the next one starts GAP
# later, so a command does not wait for the kernel work its predecessor left behind (the
# interface deletions and link closes a fast-path disconnect finishes after its reply): the
# figures are then each command's own latency rather than the rate of back-to-back commands.
#
# Usage: [UVLAN_BIN=path] [FAMILY=6|4] bench/fast_path_scale.sh [N (default 1000)]
#            [MODES (default "on off")] [GAP]
set -euo pipefail
n=${1:-1000}
family=${FAMILY:-6}
case $family in
    6) subnets=(--ipv4=false --ipv6 --subnet 2001:db8::/64) ;;
    4)
        subnets=(--subnet 192.0.2.0/24 --subnet 198.51.100.0/24 --subnet 203.0.113.0/24)
        if [ "$n" -gt 750 ]; then
            echo "fast_path_scale.sh: FAMILY=4 holds 750 endpoints at most" >&2
            exit 1
        fi
        ;;
    *) echo "fast_path_scale.sh: FAMILY is 6 or 4" >&2; exit 1 ;;
esac
modes=${2:-on off}
gap=${3:-}
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "fast_path_scale.sh: run as root (it creates namespaces)" >&2
    exit 1
fi
# UVLAN_BIN: another build of uvlan to measure (e.g. an older commit's, for a comparison).
if [ -z "${UVLAN_BIN:-}" ]; then cargo build -q --bin uvlan; fi
bin=${UVLAN_BIN:-$PWD/target/debug/uvlan}
p=uvfps$$
dir=$(mktemp -d /tmp/uvlan-fps.XXXXXX)
dpid=
cleanup() {
    [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
    for ns in $(ip netns list | awk -v p="$p" 'index($1, p) == 1 {print $1}'); do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT
ms() { echo "($2 - $1) * 1000 / $n" | bc -l | cut -c1-6; }
# Runs `uvlan "$@"` once per endpoint (the endpoint's namespace last); prints the summed
# time of the commands alone in seconds (all of it without GAP).
each() {
    local sum=0 a b i
    local t0=$EPOCHREALTIME
    for i in $(seq "$n"); do
        a=$EPOCHREALTIME
        "$bin" "$@" "$p$i" >/dev/null
        b=$EPOCHREALTIME
        if [ -n "$gap" ]; then
            sum=$(echo "$sum + $b - $a" | bc -l)
            sleep "$gap"
        fi
    done
    if [ -z "$gap" ]; then sum=$(echo "$EPOCHREALTIME - $t0" | bc -l); fi
    echo "$sum"
}
for mode in $modes; do
    ip netns add "${p}h"
    ip netns exec "${p}h" ip link set lo up
    ip netns exec "${p}h" "$bin" daemon --root "$dir/$mode" --socket "$dir/$mode.sock" \
        --fast-path "$mode" 2>"$dir/$mode.log" &
    dpid=$!
    while [ ! -S "$dir/$mode.sock" ]; do sleep 0.05; done
    export UVLAN_SOCKET=$dir/$mode.sock UVLAN_ROOT=$dir/$mode
    "$bin" network create -d macvlan --internal "${subnets[@]}" n >/dev/null
    fd0=$(ls "/proc/$dpid/fd" | wc -l)
    rss0=$(awk '/VmRSS/ {print $2}' "/proc/$dpid/status")
    for i in $(seq "$n"); do
        ip netns add "$p$i"
        # No router solicitations from the endpoints (KERNEL_RS=1 keeps the kernel's
        # forever-backoff): as in bench/scale.sh, an internal network has no router, and
        # each solicitation reaches every other endpoint.
        [ "${KERNEL_RS:-0}" = 1 ] ||
            ip netns exec "$p$i" sysctl -qw net.ipv6.conf.default.router_solicitations=0
    done
    t=$(each network connect n)
    fd1=$(ls "/proc/$dpid/fd" | wc -l)
    rss1=$(awk '/VmRSS/ {print $2}' "/proc/$dpid/status")
    echo "fast path $mode, $n endpoints (IPv$family)${gap:+, $gap s apart}: $(ms 0 "$t") ms per connect;" \
        "descriptors $fd0 -> $fd1 ($(echo "($fd1 - $fd0) / $n" | bc -l | cut -c1-5) per endpoint);" \
        "RSS $rss0 -> $rss1 KiB"
    for f in /proc/"$dpid"/fdinfo/*; do
        if grep -q '^map_type' "$f" 2>/dev/null; then
            echo "  map: $(grep -E '^(map_type|key_size|value_size|max_entries|memlock)' "$f" |
                tr -s '\t\n' '  ')"
        fi
    done
    t=$(each network disconnect n)
    echo "  $(ms 0 "$t") ms per disconnect"
    "$bin" network rm n >/dev/null
    kill "$dpid"
    wait "$dpid" || true
    dpid=
    for i in $(seq "$n"); do ip netns del "$p$i"; done
    ip netns del "${p}h"
done
