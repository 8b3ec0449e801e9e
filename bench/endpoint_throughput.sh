#!/usr/bin/env bash
# Benchmark (not a test): endpoint ↔ endpoint through uvlan, through the blind relay (the
# same dataplane with the engine replaced by a fixed pairing: the bound of this design,
# dataplane/examples/relay.rs), and through a kernel macvlan bridge (veth parent), all in the
# same run. Prints TCP, 64-byte UDP delivered, ping p50/p99, and system calls per forwarded
# frame (from the dataplane's own counters, cross-checked with `perf stat` when perf works),
# then medians and the ratios uvlan/kernel, uvlan/bound and bound/kernel. The real `uvlan`
# binary (release) and daemon are used, in namespaces this script creates and deletes;
# documentation addresses only.
#
#   sudo [IO=auto|uring|plain] [WORKERS=N] [BUSY=US] [PEERS=1] [FAST=1] bench/endpoint_throughput.sh \
#        [SECONDS (default 5)] [RUNS (default 3)] [DRIVER (ipvlan|macvlan)]
#
# BUSY=US runs uvlan's daemon and the relay with `--busy-poll US` (a worker spins that long
# for work before it sleeps; default 0: it sleeps at once).
#
# FAST=1 adds uvlan's fast path in the same run: a second daemon, started with `--fast-path
# on`, whose two endpoints on a network of the same driver are veth endpoints (the kernel
# cache forwards their decided unicast; see docs/performance.md, "Fast path").
#
# PEERS=1 adds the userspace switches a user could pick instead, in the same run: VDE
# (`vde_switch`, `vde_plug2tap` in each namespace) and Open vSwitch's userspace datapath
# (`datapath_type=netdev`, veth ports; without userspace TSO, with `tx off` on the namespace
# ends, and with `other_config:userspace-tso-enable=true`). It installs Debian's `vde2` and
# `openvswitch-switch` with apt when they are missing (on a host with systemd the package
# starts its own service; the bench does not use it: its daemons run inside the bench's
# namespaces with their databases, sockets and logs in its temporary directory, and stop
# with it).
#
# Method: iperf3 -t SECS -J; TCP = sum_received;
# UDP = iperf3 -u -l 64 -b 0, delivered packets/s = (packets - lost) / seconds; ping: 500
# echoes 10 ms apart (`ping -i 0.01 -c 500`), percentiles of the reported times. System calls
# per frame: the loop's `syscalls` over its `frames_in` across the UDP run. Medians of RUNS;
# the paths are measured one after the other in each run.
set -euo pipefail
secs=${1:-5}; runs=${2:-3}; driver=${3:-ipvlan}
io=${IO:-auto}; workers=${WORKERS:-1}; busy=${BUSY:-0}
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (it creates namespaces)" >&2; exit 1; }
scripts/deps.sh
cargo build --release -q -p uvlan-control --bin uvlan
cargo build --release -q -p uvlan-dataplane --example relay
UV=$PWD/target/release/uvlan
RELAY=$PWD/target/release/examples/relay
p="ubn$$"
dir=$(mktemp -d)
export UVLAN_ROOT=$dir/root UVLAN_SOCKET=$dir/sock
perf_ok=0
command -v perf >/dev/null 2>&1 && perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1 && perf_ok=1
cleanup() {
    set +e
    [ -n "${dpid:-}" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
    [ -n "${rpid:-}" ] && kill "$rpid" 2>/dev/null && wait "$rpid" 2>/dev/null
    [ -n "${fpid:-}" ] && kill "$fpid" 2>/dev/null && wait "$fpid" 2>/dev/null
    for f in "$dir"/vde_plug*.pid "$dir"/vde_switch.pid "$dir"/ovs-*/ovs-vswitchd.pid \
             "$dir"/ovs-*/ovsdb-server.pid; do
        [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
    done
    [ -d "$dir" ] && sleep 0.5
    for ns in $(ip netns list | awk '{print $1}' | grep "^$p-" || true); do ip netns del "$ns"; done
    rm -rf "$dir"
}
trap cleanup EXIT
for n in host a b r1 r2 k k1 k2; do ip netns add "$p-$n"; ip -n "$p-$n" link set lo up; done
ip netns exec "$p-host" "$UV" daemon --root "$UVLAN_ROOT" --socket "$UVLAN_SOCKET" \
    --io "$io" --workers "$workers" --busy-poll "$busy" 2>"$dir/daemon.log" &
dpid=$!
for _ in $(seq 100); do [ -S "$UVLAN_SOCKET" ] && break; sleep 0.05; done
"$UV" network create -d "$driver" --internal --subnet 192.0.2.0/24 bench >/dev/null
"$UV" network connect --ip 192.0.2.10 bench "$p-a"
"$UV" network connect --ip 192.0.2.20 bench "$p-b"
# The relay bound: two TAPs (eth0 in r1 and r2), addressed like endpoints.
"$RELAY" --io "$io" --workers "$workers" --busy-poll "$busy" --tap "$p-r1" --tap "$p-r2" >"$dir/relay.out" 2>&1 &
rpid=$!
for _ in $(seq 100); do grep -q "ready" "$dir/relay.out" 2>/dev/null && break; sleep 0.05; done
for i in 1 2; do
    ip -n "$p-r$i" link set eth0 address "02:00:00:00:00:3$i"
    ip -n "$p-r$i" addr add "192.0.2.3$i/24" dev eth0
    ip -n "$p-r$i" link set eth0 up
done
# kernel macvlan bridge on a veth parent
ip -n "$p-k" link add kp type veth peer name kq
ip -n "$p-k" link set kp up; ip -n "$p-k" link set kq up
for i in 1 2; do
    ip -n "$p-k" link add "mv$i" link kp type macvlan mode bridge
    ip -n "$p-k" link set "mv$i" netns "$p-k$i"
    ip -n "$p-k$i" addr add "192.0.2.$((10 + i))/24" dev "mv$i"
    ip -n "$p-k$i" link set "mv$i" up
done
# The fast path (FAST=1): a daemon of its own with `--fast-path on`, two veth endpoints.
fast=${FAST:-0}
if [ "$fast" = 1 ]; then
    for n in fhost f1 f2; do ip netns add "$p-$n"; ip -n "$p-$n" link set lo up; done
    ip netns exec "$p-fhost" "$UV" daemon --root "$dir/froot" --socket "$dir/fsock" \
        --io "$io" --workers "$workers" --busy-poll "$busy" --fast-path on 2>"$dir/fdaemon.log" &
    fpid=$!
    for _ in $(seq 100); do [ -S "$dir/fsock" ] && break; sleep 0.05; done
    fuv() { UVLAN_ROOT=$dir/froot UVLAN_SOCKET=$dir/fsock "$UV" "$@"; }
    fuv network create -d "$driver" --internal --subnet 192.0.2.0/24 fbench >/dev/null
    fuv network connect --ip 192.0.2.71 fbench "$p-f1"
    fuv network connect --ip 192.0.2.72 fbench "$p-f2"
    ip netns exec "$p-f1" ping -c 2 -q 192.0.2.72 >/dev/null
    fuv network inspect fbench | grep -q 'veth+fast-path' ||
        { echo "endpoint_throughput.sh: the fast-path daemon made no veth endpoints" >&2; exit 1; }
fi
# The userspace peers (PEERS=1): VDE and Open vSwitch's userspace datapath, without and
# with userspace TSO. Their daemons run inside namespaces of this bench with their sockets,
# databases and logs under its temporary directory, so nothing reaches the host.
peers=${PEERS:-0}
if [ "$peers" = 1 ]; then
    command -v vde_switch >/dev/null && command -v vde_plug2tap >/dev/null \
        && command -v ovs-vswitchd >/dev/null || {
        echo "installing the peers: vde2 openvswitch-switch"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            vde2 openvswitch-switch >/dev/null
    }
    # VDE: one vde_switch, one vde_plug2tap per namespace (its TAP "vde0").
    for n in v v1 v2; do ip netns add "$p-$n"; ip -n "$p-$n" link set lo up; done
    ip netns exec "$p-v" vde_switch -s "$dir/vde.ctl" -d -p "$dir/vde_switch.pid"
    for _ in $(seq 100); do [ -e "$dir/vde.ctl/ctl" ] && break; sleep 0.05; done
    for i in 1 2; do
        ip netns exec "$p-v$i" vde_plug2tap -s "$dir/vde.ctl" -d -P "$dir/vde_plug$i.pid" vde0
        for _ in $(seq 100); do ip -n "$p-v$i" link show vde0 >/dev/null 2>&1 && break; sleep 0.05; done
        ip -n "$p-v$i" link set vde0 address "02:00:00:00:00:4$i"
        ip -n "$p-v$i" addr add "192.0.2.4$i/24" dev vde0
        ip -n "$p-v$i" link set vde0 up
    done
    # OVS: one ovsdb-server and ovs-vswitchd per variant ("o": no TSO, "t": userspace TSO),
    # bridge br0 with datapath_type=netdev, a veth port to each of two namespaces.
    schema=/usr/share/openvswitch/vswitch.ovsschema
    for v in o t; do
        od=$dir/ovs-$v; mkdir -p "$od"
        for n in "$v" "${v}1" "${v}2"; do ip netns add "$p-$n"; ip -n "$p-$n" link set lo up; done
        ovsdb-tool create "$od/conf.db" "$schema"
        ovs_env=(env OVS_RUNDIR="$od" OVS_DBDIR="$od" OVS_LOGDIR="$od" OVS_SYSCONFDIR="$od")
        ip netns exec "$p-$v" "${ovs_env[@]}" ovsdb-server "$od/conf.db" \
            --remote="punix:$od/db.sock" --pidfile="$od/ovsdb-server.pid" \
            --unixctl="$od/ovsdb-server.ctl" --log-file="$od/ovsdb-server.log" --detach 2>/dev/null
        vsctl=("${ovs_env[@]}" ovs-vsctl --db="unix:$od/db.sock" --timeout=20)
        "${vsctl[@]}" --no-wait init
        if [ $v = t ]; then
            "${vsctl[@]}" --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
        fi
        ip netns exec "$p-$v" "${ovs_env[@]}" ovs-vswitchd "unix:$od/db.sock" \
            --pidfile="$od/ovs-vswitchd.pid" --unixctl="$od/ovs-vswitchd.ctl" \
            --log-file="$od/ovs-vswitchd.log" --detach 2>/dev/null
        "${vsctl[@]}" add-br br0 -- set bridge br0 datapath_type=netdev
        base=$([ $v = o ] && echo 5 || echo 6)
        for i in 1 2; do
            ip -n "$p-$v" link add "ov$i" type veth peer name eth0 netns "$p-$v$i"
            ip -n "$p-$v" link set "ov$i" up
            "${vsctl[@]}" add-port br0 "ov$i"
            ip -n "$p-$v$i" link set eth0 address "02:00:00:00:00:$base$i"
            ip -n "$p-$v$i" addr add "192.0.2.$base$i/24" dev eth0
            ip -n "$p-$v$i" link set eth0 up
            # Without userspace TSO the datapath cannot take partial checksums or TSO frames.
            [ $v = o ] && ip netns exec "$p-$v$i" ethtool -K eth0 tx off >/dev/null
        done
    done
    ip netns exec "$p-v1" ping -c 2 -q 192.0.2.42 >/dev/null
    ip netns exec "$p-o1" ping -c 2 -q 192.0.2.52 >/dev/null
    ip netns exec "$p-t1" ping -c 2 -q 192.0.2.62 >/dev/null
    echo "peers: $(vde_switch -v 2>&1 | head -1 | tr -s ' '), $(ovs-vswitchd --version | head -1)"
fi
ip netns exec "$p-a" ping -c 2 -q 192.0.2.20 >/dev/null
ip netns exec "$p-r1" ping -c 2 -q 192.0.2.32 >/dev/null
ip netns exec "$p-k1" ping -c 2 -q 192.0.2.12 >/dev/null
echo "uvlan: $(grep -o 'I/O: .*' "$dir/daemon.log" | head -1 | sed 's/) (wire backend.*//')"
echo "relay: $(grep -o 'ready: .*' "$dir/relay.out")"

# "syscalls frames_in" of a path's loop, cumulative: uvlan from `uvlan stats`, the relay
# from its last counter line; the kernel has none.
counters() {
    case $1 in
    uvlan) "$UV" stats --format json | python3 -c 'import json,sys
w=json.load(sys.stdin)["dataplane"]["workers"]
print(sum(x["syscalls"] for x in w), sum(x["frames_in"] for x in w))' ;;
    relay) sleep 1.1; tail -1 "$dir/relay.out" | python3 -c 'import sys
kv=dict(f.split("=") for f in sys.stdin.read().split()[1:])
print(kv["syscalls"], kv["frames_in"])' ;;
    *) echo "0 0" ;;
    esac
}
# The dataplane threads of a process, comma-separated (for perf stat --tid).
tids() {
    local pid=$1 out=""
    for t in /proc/"$pid"/task/*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = uvlan-dataplane ] && out="$out${out:+,}${t##*/}"
    done
    echo "$out"
}
# measure PATH SERVER-NS CLIENT-NS ADDR -> "tcp_gbps udp_kpps p50_us p99_us syscalls/frame perf/frame"
measure() {
    local path=$1 s=$2 c=$3 addr=$4 tcp udp rtt sc0 fr0 sc1 fr1 spf ppf="-" pid="" perfout
    local perfpid=""
    ip netns exec "$s" iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
    tcp=$(ip netns exec "$c" iperf3 -c "$addr" -t "$secs" -J | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))')
    ip netns exec "$s" iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
    read -r sc0 fr0 < <(counters "$path")
    case $path in uvlan) pid=$dpid ;; relay) pid=$rpid ;; esac
    perfout=$dir/perf.$path
    if [ "$perf_ok" = 1 ] && [ -n "$pid" ]; then
        perf stat -x, -e raw_syscalls:sys_enter --tid "$(tids "$pid")" -o "$perfout" -- sleep "$secs" &
        perfpid=$!
    fi
    udp=$(ip netns exec "$c" iperf3 -c "$addr" -t "$secs" -u -l 64 -b 0 -J | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum"]; print("%.0f" % ((e["packets"]-e["lost_packets"])/e["seconds"]/1e3))')
    [ -n "$perfpid" ] && wait "$perfpid"
    read -r sc1 fr1 < <(counters "$path")
    spf=$(python3 -c "d=$fr1-$fr0; print('%.3f' % (($sc1-$sc0)/d) if d > 0 else '-')")
    if [ -s "$perfout" ]; then
        ppf=$(python3 -c "
import csv
n = [int(r[0]) for r in csv.reader(open('$perfout')) if len(r) > 2 and r[0].isdigit()]
d = $fr1 - $fr0
print('%.3f' % (sum(n) / d) if n and d > 0 else '-')")
        rm -f "$perfout"
    fi
    rtt=$(ip netns exec "$c" ping -i 0.01 -c 500 "$addr" | python3 -c 'import re,sys
t=sorted(float(x)*1000 for x in re.findall(r"time=([0-9.]+)", sys.stdin.read()))
print("%.0f %.0f" % (t[len(t)//2], t[max(0, int(len(t)*0.99)-1)]) if t else "- -")')
    echo "$tcp $udp $rtt $spf $ppf"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
col() { cut -d' ' -f"$2" "$dir/$1" | median; }
: >"$dir/u"; : >"$dir/r"; : >"$dir/k"; : >"$dir/f"; : >"$dir/v"; : >"$dir/o"; : >"$dir/t"
echo "per run: TCP Gbit/s, UDP-64 kpps delivered, ping p50/p99 µs, system calls per frame (counters / perf)"
for i in $(seq "$runs"); do
    measure uvlan "$p-a" "$p-b" 192.0.2.10 >>"$dir/u"
    measure relay "$p-r1" "$p-r2" 192.0.2.31 >>"$dir/r"
    measure kernel "$p-k1" "$p-k2" 192.0.2.11 >>"$dir/k"
    echo "run $i/$runs: uvlan $(tail -1 "$dir/u") | relay $(tail -1 "$dir/r") | kernel $(tail -1 "$dir/k")"
    if [ "$fast" = 1 ]; then
        measure fast "$p-f1" "$p-f2" 192.0.2.71 >>"$dir/f"
        echo "   fast path: $(tail -1 "$dir/f")"
    fi
    if [ "$peers" = 1 ]; then
        measure vde "$p-v1" "$p-v2" 192.0.2.41 >>"$dir/v"
        measure ovs "$p-o1" "$p-o2" 192.0.2.51 >>"$dir/o"
        measure ovs-tso "$p-t1" "$p-t2" 192.0.2.61 >>"$dir/t"
        echo "   peers: vde $(tail -1 "$dir/v") | ovs $(tail -1 "$dir/o") | ovs+tso $(tail -1 "$dir/t")"
    fi
done
fs="u r k"; [ "$fast" = 1 ] && fs="$fs f"; [ "$peers" = 1 ] && fs="$fs v o t"
for f in $fs; do
    read -r "${f}t" "${f}u" "${f}p" "${f}q" "${f}s" "${f}f" <<<"$(col $f 1) $(col $f 2) $(col $f 3) $(col $f 4) $(col $f 5) $(col $f 6)"
done
echo "medians (IO=$io, WORKERS=$workers):"
echo "  uvlan $driver:          TCP $ut Gbit/s, UDP-64 $uu kpps, ping p50 $up µs p99 $uq µs, syscalls/frame $us (perf $uf)"
echo "  relay bound:            TCP $rt Gbit/s, UDP-64 $ru kpps, ping p50 $rp µs p99 $rq µs, syscalls/frame $rs (perf $rf)"
echo "  kernel macvlan bridge:  TCP $kt Gbit/s, UDP-64 $ku kpps, ping p50 $kp µs p99 $kq µs"
python3 -c "
r = lambda a, b: '%.2f' % (a / b) if b else '-'
print('ratios: uvlan/kernel TCP %s UDP %s | uvlan/bound TCP %s UDP %s | bound/kernel TCP %s UDP %s' % (
    r($ut, $kt), r($uu, $ku), r($ut, $rt), r($uu, $ru), r($rt, $kt), r($ru, $ku)))
print('ping p50: uvlan - kernel = %+.0f µs, relay - kernel = %+.0f µs' % ($up - $kp, $rp - $kp))"
if [ "$fast" = 1 ]; then
    echo "  uvlan fast path:        TCP $ft Gbit/s, UDP-64 $fu kpps, ping p50 $fp µs p99 $fq µs"
    python3 -c "
r = lambda a, b: '%.2f' % (a / b) if b else '-'
print('ratios: fast path/kernel TCP %s UDP %s ping p50 %s | fast path/slow path TCP %s UDP %s' % (
    r($ft, $kt), r($fu, $ku), r($fp, $kp), r($ft, $ut), r($fu, $uu)))"
fi
if [ "$peers" = 1 ]; then
    echo "  VDE:                    TCP $vt Gbit/s, UDP-64 $vu kpps, ping p50 $vp µs p99 $vq µs"
    echo "  OVS userspace:          TCP $ot Gbit/s, UDP-64 $ou kpps, ping p50 $op µs p99 $oq µs"
    echo "  OVS userspace + TSO:    TCP $tt Gbit/s, UDP-64 $tu kpps, ping p50 $tp µs p99 $tq µs"
    python3 -c "
r = lambda a, b: '%.2f' % (a / b) if b else '-'
for n, t, u in (('VDE', $vt, $vu), ('OVS', $ot, $ou), ('OVS+TSO', $tt, $tu)):
    print('ratios: %s/kernel TCP %s UDP %s | uvlan/%s TCP %s UDP %s' % (
        n, r(t, $kt), r(u, $ku), n, r($ut, t), r($uu, u)))"
fi
