#!/usr/bin/env bash
# Many fast-path endpoints (not a test): connects N endpoints (default 750, the most the three
# IPv4 documentation /24s give one network) to one internal macvlan network of a private
# daemon, one `uvlan network connect` after the other, with `--fast-path on` and `off`, and
# prints per connect and disconnect time, the daemon's descriptors per endpoint, its RSS and
# the fast path's maps (type, sizes, memlock, from the daemon's /proc/PID/fdinfo). Numbers
# are printed, never asserted. Root; namespaces `uvfps*` it creates and deletes only;
# addresses from 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24.
#
# Usage: bench/fast_path_scale.sh [N (default 750)] [MODES (default "on off")]
set -euo pipefail
n=${1:-750}
modes=${2:-on off}
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "fast_path_scale.sh: run as root (it creates namespaces)" >&2
    exit 1
fi
cargo build -q --bin uvlan
bin=$PWD/target/debug/uvlan
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
for mode in $modes; do
    ip netns add "${p}h"
    ip netns exec "${p}h" ip link set lo up
    ip netns exec "${p}h" "$bin" daemon --root "$dir/$mode" --socket "$dir/$mode.sock" \
        --fast-path "$mode" 2>"$dir/$mode.log" &
    dpid=$!
    while [ ! -S "$dir/$mode.sock" ]; do sleep 0.05; done
    export UVLAN_SOCKET=$dir/$mode.sock UVLAN_ROOT=$dir/$mode
    "$bin" network create -d macvlan --internal --subnet 192.0.2.0/24 \
        --subnet 198.51.100.0/24 --subnet 203.0.113.0/24 n >/dev/null
    fd0=$(ls "/proc/$dpid/fd" | wc -l)
    rss0=$(awk '/VmRSS/ {print $2}' "/proc/$dpid/status")
    for i in $(seq "$n"); do ip netns add "$p$i"; done
    t0=$(date +%s.%N)
    for i in $(seq "$n"); do "$bin" network connect n "$p$i" >/dev/null; done
    t1=$(date +%s.%N)
    fd1=$(ls "/proc/$dpid/fd" | wc -l)
    rss1=$(awk '/VmRSS/ {print $2}' "/proc/$dpid/status")
    echo "fast path $mode, $n endpoints: $(ms "$t0" "$t1") ms per connect;" \
        "descriptors $fd0 -> $fd1 ($(echo "($fd1 - $fd0) / $n" | bc -l | cut -c1-5) per endpoint);" \
        "RSS $rss0 -> $rss1 KiB"
    for f in /proc/"$dpid"/fdinfo/*; do
        if grep -q '^map_type' "$f" 2>/dev/null; then
            echo "  map: $(grep -E '^(map_type|key_size|value_size|max_entries|memlock)' "$f" |
                tr -s '\t\n' '  ')"
        fi
    done
    t0=$(date +%s.%N)
    for i in $(seq "$n"); do "$bin" network disconnect n "$p$i" >/dev/null; done
    t1=$(date +%s.%N)
    echo "  $(ms "$t0" "$t1") ms per disconnect"
    "$bin" network rm n >/dev/null
    kill "$dpid"
    wait "$dpid" || true
    dpid=
    for i in $(seq "$n"); do ip netns del "$p$i"; done
    ip netns del "${p}h"
done
