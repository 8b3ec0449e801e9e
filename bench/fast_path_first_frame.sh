#!/usr/bin/env bash
# The first frame of a new fast-path key (not a test): two endpoints of one internal macvlan
# network of a private daemon (`--fast-path on`, or MODE=off for TAP endpoints); per cycle,
# a third endpoint is connected and disconnected (every engine change empties the cache),
# then `ping -c 3 -i 0.05` from the first endpoint to the second: the first RTT has the
# request and the reply each take the slow path once (and be learned), the next two are
# cached. Prints the three RTTs per cycle (ms), then the medians and quartiles (µs). The
# neighbour entries stay valid across cycles, so no ARP is in the way. Numbers are printed,
# never asserted. Root; namespaces `uvfpf*` it creates and deletes only; 192.0.2.0/24.
#
# Usage: [MODE=on|off] [UVLAN_BIN=path] bench/fast_path_first_frame.sh [CYCLES (default 30)]
#        (UVLAN_BIN: e.g. target/release/uvlan; default: the debug build, built first)
set -euo pipefail
n=${1:-30}
mode=${MODE:-on}
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "fast_path_first_frame.sh: run as root (it creates namespaces)" >&2
    exit 1
fi
if [ -z "${UVLAN_BIN:-}" ]; then cargo build -q --bin uvlan; fi
bin=${UVLAN_BIN:-$PWD/target/debug/uvlan}
p=uvfpf$$
dir=$(mktemp -d /tmp/uvlan-fpf.XXXXXX)
dpid=
cleanup() {
    set +e
    if [ -n "$dpid" ]; then
        kill "$dpid" 2>/dev/null
        wait "$dpid" 2>/dev/null
    fi
    for ns in $(ip netns list | awk -v p="$p" 'index($1, p) == 1 {print $1}'); do
        ip netns del "$ns"
    done
    rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "${p}h"
ip netns exec "${p}h" ip link set lo up
ip netns exec "${p}h" "$bin" daemon --root "$dir/r" --socket "$dir/s.sock" \
    --fast-path "$mode" 2>"$dir/log" &
dpid=$!
while [ ! -S "$dir/s.sock" ]; do sleep 0.05; done
export UVLAN_SOCKET=$dir/s.sock UVLAN_ROOT=$dir/r
"$bin" network create -d macvlan --internal --subnet 192.0.2.0/24 n >/dev/null
for i in 1 2 3; do ip netns add "$p$i"; done
for i in 1 2; do "$bin" network connect --ip "192.0.2.1$i" n "$p$i" >/dev/null; done
ip netns exec "${p}1" ping -c 3 -i 0.2 192.0.2.12 >/dev/null
out=$dir/rtts
for _ in $(seq "$n"); do
    "$bin" network connect --ip 192.0.2.13 n "${p}3" >/dev/null
    "$bin" network disconnect n "${p}3" >/dev/null
    ip netns exec "${p}1" ping -c 3 -i 0.05 192.0.2.12 |
        grep -o 'time=[0-9.]*' | cut -d= -f2 | tr '\n' ' ' | tee -a "$out"
    echo | tee -a "$out"
done
echo "fast path $mode, $n cycles:"
python3 - "$out" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 3]
def q(v):
    v = sorted(v)
    lo, hi = v[len(v) // 4] * 1000, v[3 * len(v) // 4] * 1000
    return f"{statistics.median(v) * 1000:.0f} µs ({lo:.0f}–{hi:.0f})"
for i, name in enumerate(["first ping (new keys)", "second ping", "third ping"]):
    print(f"  {name:<22} {q([r[i] for r in rows])}")
print(f"  first − third          {q([r[0] - r[2] for r in rows])}")
PY
"$bin" stats 2>/dev/null | grep -A3 "fast path" || true
