#!/usr/bin/env bash
# Benchmark (not a test): TCP and 64-byte UDP between two endpoints of one uvlan network, and
# between two namespaces on a kernel macvlan bridge (veth parent), in the same run; prints both
# and the ratio uvlan/kernel. The real `uvlan` binary (release) and daemon are used, in
# namespaces this script creates and deletes; documentation addresses only.
#
#   sudo bench/endpoint_throughput.sh [SECONDS (default 5)] [RUNS (default 3)] [DRIVER (ipvlan|macvlan)]
#
# Method: iperf3 -t SECS -J; TCP = sum_received;
# UDP = iperf3 -u -l 64 -b 0, delivered packets/s = (packets - lost) / seconds. Medians of RUNS.
set -euo pipefail
secs=${1:-5}; runs=${2:-3}; driver=${3:-ipvlan}
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (it creates namespaces)" >&2; exit 1; }
scripts/deps.sh
cargo build --release -q -p uvlan-control --bin uvlan
UV=$PWD/target/release/uvlan
p="ubn$$"
dir=$(mktemp -d)
export UVLAN_ROOT=$dir/root UVLAN_SOCKET=$dir/sock
cleanup() {
    [ -n "${dpid:-}" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
    for ns in $(ip netns list | awk '{print $1}' | grep "^$p-" || true); do ip netns del "$ns"; done
    rm -rf "$dir"
}
trap cleanup EXIT
for n in host a b k k1 k2; do ip netns add "$p-$n"; ip -n "$p-$n" link set lo up; done
ip netns exec "$p-host" "$UV" daemon --root "$UVLAN_ROOT" --socket "$UVLAN_SOCKET" 2>"$dir/daemon.log" &
dpid=$!
for _ in $(seq 100); do [ -S "$UVLAN_SOCKET" ] && break; sleep 0.05; done
"$UV" network create -d "$driver" --internal --subnet 192.0.2.0/24 bench >/dev/null
"$UV" network connect --ip 192.0.2.10 bench "$p-a"
"$UV" network connect --ip 192.0.2.20 bench "$p-b"
# kernel macvlan bridge on a veth parent
ip -n "$p-k" link add kp type veth peer name kq
ip -n "$p-k" link set kp up; ip -n "$p-k" link set kq up
for i in 1 2; do
    ip -n "$p-k" link add "mv$i" link kp type macvlan mode bridge
    ip -n "$p-k" link set "mv$i" netns "$p-k$i"
    ip -n "$p-k$i" addr add "192.0.2.$((10 + i))/24" dev "mv$i"
    ip -n "$p-k$i" link set "mv$i" up
done
ip netns exec "$p-a" ping -c 2 -q 192.0.2.20 >/dev/null
ip netns exec "$p-k1" ping -c 2 -q 192.0.2.12 >/dev/null
measure() { # server-ns client-ns addr -> "tcp_gbps udp_kpps"
    local s=$1 c=$2 addr=$3 tcp udp
    ip netns exec "$s" iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
    tcp=$(ip netns exec "$c" iperf3 -c "$addr" -t "$secs" -J | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))')
    ip netns exec "$s" iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
    udp=$(ip netns exec "$c" iperf3 -c "$addr" -t "$secs" -u -l 64 -b 0 -J | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum"]; print("%.0f" % ((e["packets"]-e["lost_packets"])/e["seconds"]/1e3))')
    echo "$tcp $udp"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: >"$dir/u"; : >"$dir/k"
for i in $(seq "$runs"); do
    measure "$p-a" "$p-b" 192.0.2.10 >>"$dir/u"
    measure "$p-k1" "$p-k2" 192.0.2.11 >>"$dir/k"
    echo "run $i/$runs: uvlan $(tail -1 "$dir/u")  kernel $(tail -1 "$dir/k")  (TCP Gbit/s, UDP-64 kpps)"
done
ut=$(cut -d' ' -f1 "$dir/u" | median); uu=$(cut -d' ' -f2 "$dir/u" | median)
kt=$(cut -d' ' -f1 "$dir/k" | median); ku=$(cut -d' ' -f2 "$dir/k" | median)
echo "uvlan $driver endpoint<->endpoint: TCP $ut Gbit/s, UDP-64 $uu kpps delivered"
echo "kernel macvlan bridge:             TCP $kt Gbit/s, UDP-64 $ku kpps delivered"
python3 -c "print('ratio uvlan/kernel: TCP %.2f, UDP-64 %.2f' % ($ut/$kt, $uu/$ku))"
