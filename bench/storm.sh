#!/usr/bin/env bash
# Benchmark (not a test): how much of their TCP throughput two endpoints keep while a third
# endpoint of the same uvlan network storms it (issue 14, "fair forwarding"). Printed as ratios
# against the same measurement without a storm; nothing is asserted.
#
#   sudo bench/storm.sh [SECONDS (default 5)] [DRIVER (ipvlan|macvlan, default ipvlan)] [FLOODERS (default 1)]
#   (ROUNDS=N: rounds of the four measurements, interleaved, default 3; medians compared)
#   (TAP_FILTER=off: the daemon runs with `--tap-filter off`: the garbage, which an internal
#   ipvlan L2 network drops as no_wire, is read and dropped by the engine instead of by each
#   TAP's prefilter in the flooder's context; default on, the daemon's default)
#   (STORM_SHARE=PERCENT: the daemon's `--storm-share`, the share of the dataplane's time a
#   flooding endpoint may take; default 10, the daemon's default; 100 keeps only flood
#   deferral's fixed 1 ms pauses)
#   (FAST=on: the daemon runs with `--fast-path on`: veth endpoints, a -> b through the
#   kernel cache; the storm still takes the slow path: garbage is dropped by the engine and
#   broadcasts are written to every other endpoint)
#
# Four measurements of iperf3 TCP a -> b (-t SECONDS), one after the other, ROUNDS times:
#   quiet      no storm
#   elsewhere  the storm (garbage) on a veth pair that has nothing to do with uvlan: what the
#              flooder's CPU alone costs the others on this machine
#   garbage    endpoint s sends random bytes (random lengths, a quarter shorter than an Ethernet
#              header, unicast destinations nobody has) from an AF_PACKET socket, qdisc bypassed
#   broadcast  endpoint s sends 64-byte UDP broadcasts the same way (every other endpoint
#              receives each one, as with the kernel)
# The kernel's own driver is measured the same way in each round, for reference (kernel
# macvlan bridge, or ipvlan l2 bridge where the kernel has ipvlan, on a veth parent: endpoints
# ks, ka, kb): what a storm costs the others with the kernel doing the forwarding.
# FLOODERS processes of tests/flood.py send at once. The script also prints the storm's rate,
# what uvlan read of it and how much the stormer's TAP queue dropped (`uvlan stats`).
# The real `uvlan` binary (release, or $UVLAN_BIN) and daemon are used, in namespaces this
# script creates and deletes; documentation addresses only.
set -euo pipefail
secs=${1:-5}; driver=${2:-ipvlan}; flooders=${3:-1}; rounds=${ROUNDS:-3}
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (it creates namespaces)" >&2; exit 1; }
if [ -n "${UVLAN_BIN:-}" ]; then
    UV=$UVLAN_BIN
else
    cargo build --release -q -p uvlan-control --bin uvlan
    UV=$PWD/target/release/uvlan
fi
FLOOD=$PWD/tests/flood.py
p="ust$$"
dir=$(mktemp -d)
export UVLAN_ROOT=$dir/root UVLAN_SOCKET=$dir/sock
cleanup() {
    for pid in $(cat "$dir/flooders" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    [ -n "${dpid:-}" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
    for ns in $(ip netns list | awk '{print $1}' | grep "^$p-" || true); do ip netns del "$ns"; done
    rm -rf "$dir"
}
trap cleanup EXIT
for n in host s a b v ks ka kb; do ip netns add "$p-$n"; ip -n "$p-$n" link set lo up; done
ip netns exec "$p-host" "$UV" daemon --root "$UVLAN_ROOT" --socket "$UVLAN_SOCKET" \
    --fast-path "${FAST:-off}" --tap-filter "${TAP_FILTER:-on}" \
    --storm-share "${STORM_SHARE:-10}" 2>"$dir/daemon.log" &
dpid=$!
for _ in $(seq 100); do [ -S "$UVLAN_SOCKET" ] && break; sleep 0.05; done
"$UV" network create -d "$driver" --internal --subnet 192.0.2.0/24 storm >/dev/null
"$UV" network connect --ip 192.0.2.9 storm "$p-s"
"$UV" network connect --ip 192.0.2.10 storm "$p-a"
"$UV" network connect --ip 192.0.2.20 storm "$p-b"
# The unrelated veth pair for "elsewhere".
ip -n "$p-v" link add v0 type veth peer name v1
ip -n "$p-v" link set v0 up; ip -n "$p-v" link set v1 up
# The kernel reference: three slaves of the kernel's driver on a veth parent in v.
kdriver=$driver
ip -n "$p-v" link add kp0 type veth peer name kp1
ip -n "$p-v" link set kp0 up; ip -n "$p-v" link set kp1 up
kernel_slave() { # name address namespace
    if [ "$kdriver" = ipvlan ] &&
        ip -n "$p-v" link add "$1" link kp0 type ipvlan mode l2 bridge 2>/dev/null; then :; else
        kdriver=macvlan
        ip -n "$p-v" link add "$1" link kp0 type macvlan mode bridge
    fi
    ip -n "$p-v" link set "$1" netns "$3"
    ip -n "$3" link set "$1" name eth0
    ip -n "$3" addr add "$2/24" dev eth0
    ip -n "$3" link set eth0 up
}
kernel_slave ks0 192.0.2.9 "$p-ks"
kernel_slave ka0 192.0.2.10 "$p-ka"
kernel_slave kb0 192.0.2.20 "$p-kb"
ip netns exec "$p-ka" ping -c 2 -q 192.0.2.20 >/dev/null
ip netns exec "$p-a" ping -c 2 -q 192.0.2.20 >/dev/null

tcp() { # [CLIENT_NS SERVER_NS] -> Gbit/s a -> b
    local cl=${1:-$p-a} sv=${2:-$p-b}
    ip netns exec "$sv" iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
    ip netns exec "$cl" iperf3 -c 192.0.2.20 -t "$secs" -J |
        python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
storm() { # ns iface kind: starts FLOODERS flooders for SECONDS + 2 s
    : >"$dir/flooders"
    for i in $(seq "$flooders"); do
        ip netns exec "$1" python3 "$FLOOD" "$2" "$3" --seconds $((secs + 2)) >"$dir/flood.$i" 2>&1 &
        echo $! >>"$dir/flooders"
    done
    sleep 1
}
calm() {
    for pid in $(cat "$dir/flooders"); do wait "$pid" || true; done
    : >"$dir/flooders"
    cat "$dir"/flood.* | sed 's/^/    flooder: /'
}
sent_by_s() { # frames uvlan read from s, frames its TAP dropped, engine drops, loop wake-ups, flood pauses, prefiltered
    "$UV" stats --format json storm | python3 -c '
import json, sys
r = json.load(sys.stdin)
e = [e for e in r["networks"][0]["endpoints"] if e["name"].endswith("-s")][0]
w = (r.get("dataplane") or {}).get("workers", [])
pre = e.get("prefiltered", 0)
print(e["sent_frames"] - pre, e["tap_dropped"], sum(e.get("engine_drops", {}).values()) - pre,
      sum(x["wakeups"] for x in w), sum(x.get("flood_pauses", 0) for x in w), pre)'
}

# ROUNDS rounds of the four measurements, interleaved; the medians are compared.
for round in $(seq "$rounds"); do
    echo "round $round of $rounds"
    q=$(tcp); echo "$q" >>"$dir/quiet"
    echo "  quiet:     TCP a->b $q Gbit/s"
    storm "$p-v" v0 garbage
    e=$(tcp)
    calm
    echo "$e" >>"$dir/elsewhere"
    echo "  elsewhere: TCP a->b $e Gbit/s (the flooder on an unrelated veth)"
    for kind in garbage broadcast; do
        read -r r0 t0 d0 w0 f0 q0 < <(sent_by_s)
        storm "$p-s" eth0 "$kind"
        got=$(tcp)
        calm
        read -r r1 t1 d1 w1 f1 q1 < <(sent_by_s)
        echo "$got" >>"$dir/$kind"
        echo "  $kind: TCP a->b $got Gbit/s; uvlan read $((r1 - r0)) storm frames, dropped $((d1 - d0)) of them, the stormer's TAP dropped $((t1 - t0)), its prefilter $((q1 - q0)); the loop woke $((w1 - w0)) times and paused the stormer $((f1 - f0)) times"
    done
    k=$(tcp "$p-ka" "$p-kb"); echo "$k" >>"$dir/kquiet"
    echo "  kernel $kdriver, quiet: TCP a->b $k Gbit/s"
    for kind in garbage broadcast; do
        storm "$p-ks" eth0 "$kind"
        k=$(tcp "$p-ka" "$p-kb")
        calm
        echo "$k" >>"$dir/k$kind"
        echo "  kernel $kdriver, $kind: TCP a->b $k Gbit/s"
    done
done
python3 - "$dir" "$driver" "$kdriver" <<'EOF'
import statistics, sys
d = sys.argv[1]
m = {k: statistics.median(float(x) for x in open(f"{d}/{k}").read().split())
     for k in ("quiet", "elsewhere", "garbage", "broadcast", "kquiet", "kgarbage", "kbroadcast")}
q, e, g, b = m["quiet"], m["elsewhere"], m["garbage"], m["broadcast"]
kq, kg, kb = m["kquiet"], m["kgarbage"], m["kbroadcast"]
print(f"kernel {sys.argv[3]} medians: quiet {kq:.2f}, garbage {kg:.2f}, broadcast {kb:.2f} Gbit/s; "
      f"kept under a storm: garbage {kg / kq:.2f}, broadcast {kb / kq:.2f}")
print(f"medians: quiet {q:.2f}, elsewhere {e:.2f}, garbage {g:.2f}, broadcast {b:.2f} Gbit/s")
print(f"uvlan {sys.argv[2]}: throughput kept under a storm (ratio to quiet): "
      f"garbage {g / q:.2f}, broadcast {b / q:.2f}; the flooder elsewhere {e / q:.2f}")
print(f"relative to the flooder elsewhere (uvlan's own share of the cost): "
      f"garbage {g / e:.2f}, broadcast {b / e:.2f}")
print(f"uvlan's share kept ÷ the kernel's share kept: garbage {(g / q) / (kg / kq):.2f}, "
      f"broadcast {(b / q) / (kb / kq):.2f}")
EOF
