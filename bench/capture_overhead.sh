#!/usr/bin/env bash
# Benchmark (not a test): the forwarding rate between two endpoints of one uvlan network with
# no capture, and with `uvlan capture NET -w /dev/null` recording every frame of both
# endpoints, alternating in the same run; prints both and the ratio with/without. The real
# `uvlan` binary (release) and daemon are used, in namespaces this script creates and deletes;
# documentation addresses only.
#
#   sudo bench/capture_overhead.sh [SECONDS (default 5)] [RUNS (default 3)]
#
# Method: iperf3 -t SECS -J; TCP = sum_received; UDP = iperf3 -u -l 64 -b 0, delivered
# packets/s = (packets - lost) / seconds. Medians of RUNS. The capture's own counts (frames
# written, records lost) are printed from its end-of-capture line.
set -euo pipefail
secs=${1:-5}; runs=${2:-3}
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (it creates namespaces)" >&2; exit 1; }
scripts/deps.sh
cargo build --release -q -p uvlan-control --bin uvlan
UV=$PWD/target/release/uvlan
p="ucb$$"
dir=$(mktemp -d)
export UVLAN_ROOT=$dir/root UVLAN_SOCKET=$dir/sock
cleanup() {
    [ -n "${cpid:-}" ] && kill -INT "$cpid" 2>/dev/null && wait "$cpid" 2>/dev/null
    [ -n "${dpid:-}" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
    for ns in $(ip netns list | awk '{print $1}' | grep "^$p-" || true); do ip netns del "$ns"; done
    rm -rf "$dir"
}
trap cleanup EXIT
for n in host a b; do ip netns add "$p-$n"; ip -n "$p-$n" link set lo up; done
ip netns exec "$p-host" "$UV" daemon --root "$UVLAN_ROOT" --socket "$UVLAN_SOCKET" 2>"$dir/daemon.log" &
dpid=$!
for _ in $(seq 100); do [ -S "$UVLAN_SOCKET" ] && break; sleep 0.05; done
"$UV" network create -d ipvlan --internal --subnet 192.0.2.0/24 bench >/dev/null
"$UV" network connect --ip 192.0.2.10 bench "$p-a"
"$UV" network connect --ip 192.0.2.20 bench "$p-b"
ip netns exec "$p-a" ping -c 2 -q 192.0.2.20 >/dev/null
measure() { # -> "tcp_gbps udp_kpps"
    local tcp udp
    ip netns exec "$p-a" iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
    tcp=$(ip netns exec "$p-b" iperf3 -c 192.0.2.10 -t "$secs" -J | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))')
    ip netns exec "$p-a" iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
    udp=$(ip netns exec "$p-b" iperf3 -c 192.0.2.10 -t "$secs" -u -l 64 -b 0 -J | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum"]; print("%.0f" % ((e["packets"]-e["lost_packets"])/e["seconds"]/1e3))')
    echo "$tcp $udp"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: >"$dir/off"; : >"$dir/on"
for i in $(seq "$runs"); do
    measure >>"$dir/off"
    "$UV" capture bench -w /dev/null 2>"$dir/cap.err" &
    cpid=$!
    sleep 0.5
    measure >>"$dir/on"
    kill -INT "$cpid"; wait "$cpid" || true; cpid=
    echo "run $i/$runs: no capture $(tail -1 "$dir/off")  capture $(tail -1 "$dir/on")  (TCP Gbit/s, UDP-64 kpps)"
    echo "  capture: $(tail -1 "$dir/cap.err")"
done
ot=$(cut -d' ' -f1 "$dir/off" | median); ou=$(cut -d' ' -f2 "$dir/off" | median)
ct=$(cut -d' ' -f1 "$dir/on" | median); cu=$(cut -d' ' -f2 "$dir/on" | median)
echo "no capture:          TCP $ot Gbit/s, UDP-64 $ou kpps delivered"
echo "capture -w /dev/null: TCP $ct Gbit/s, UDP-64 $cu kpps delivered"
python3 -c "print('ratio capture/none: TCP %.2f, UDP-64 %.2f' % ($ct/$ot, $cu/$ou))"
