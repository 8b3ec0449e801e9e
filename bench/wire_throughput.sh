#!/usr/bin/env bash
# Wire ↔ endpoint throughput through uvlan (the real daemon, release build, forced to AF_XDP
# and then to AF_PACKET; and on each with the fast path, `--fast-path on`: a veth endpoint
# whose decided unicast to and from the wire the kernel cache forwards) against the kernel's
# macvlan and against the wire relay bound (the same dataplane with the engine replaced by a
# fixed pairing, dataplane/examples/relay.rs, TAP ↔ AF_XDP and TAP ↔ AF_PACKET), measured in
# the same run.
# Root only; namespaces and veths only (nothing touches the real uplink); documentation
# addresses only; everything is deleted on exit.
#
# Topology (one per implementation, built fresh):
#   ns H: parent veth up0 (02:00:00:00:01:01) ──── ns U: eth0 192.0.2.254 (the "wire" peer,
#         tx checksum offload off: a veth feeding an XSK needs complete checksums)
#   ns E: the endpoint eth0 192.0.2.10, MAC 02:00:00:00:00:10, macvlan bridge on up0:
#         kernel:  ip link add … link up0 type macvlan mode bridge, moved into E
#         uvlan:   uvlan network create -d macvlan -o parent=up0 …; uvlan network connect
#                  (with --fast-path on: eth0 is a veth whose other end sits in H)
#         relay:   relay --tap E --parent up0 --mac 02:00:00:00:00:10 (run in H)
# Measurements (iperf3, server in U, client in E), each RUNS times, median printed:
#   TCP E→U, TCP U→E (-R): receiver Mbit/s
#   UDP 64-byte payload E→U and U→E (-u -l 64 -b 0): datagrams delivered per second
# Also the kernel's macvlan while uvlan's XDP filter sits on up0 (a daemon holding up0 for a
# network without endpoints): what the program alone costs the kernel on a veth parent; and
# the kernel and the AF_PACKET fast path with U's TX offloads on (its TCP then reaches the
# parent as GSO frames, as a NIC's GRO hands them up; an XSK cannot take such frames).
# Numbers are printed, never asserted; ratios: uvlan / kernel, relay / kernel, uvlan / relay,
# fast path / kernel, AF_XDP fast path / kernel with the XDP program.
#
# Usage: [ROWS="…"] [ROUNDS=N] bench/wire_throughput.sh [SECONDS_PER_RUN (default 5)] [RUNS (default 3)]
#   ROWS: the implementations to measure, in this order, of: kernel kernel+xdp relay/af_xdp
#         uvlan/af_xdp relay/af_packet uvlan/af_packet uvlan/af_xdp+fast uvlan/af_packet+fast
#         kernel+txon uvlan/af_packet+fast+txon (default: all of them)
#   ROUNDS: how many times the rows run, one round after the other (default 1), so that a
#         slow minute of the machine falls on every row; each figure is the median of its
#         ROUNDS × RUNS runs.
set -euo pipefail
secs=${1:-5}
runs=${2:-3}
rounds=${ROUNDS:-1}
rows=${ROWS:-kernel kernel+xdp relay/af_xdp uvlan/af_xdp relay/af_packet uvlan/af_packet \
uvlan/af_xdp+fast uvlan/af_packet+fast kernel+txon uvlan/af_packet+fast+txon}
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "wire_throughput.sh: run as root (it creates namespaces and veths)" >&2
    exit 1
fi
for t in iperf3 ethtool ip; do
    command -v "$t" >/dev/null || { echo "wire_throughput.sh: $t is not installed" >&2; exit 1; }
done

cargo build -q --release -p uvlan-control --bin uvlan
cargo build -q --release -p uvlan-dataplane --example relay
uvlan=$PWD/target/release/uvlan
relay=$PWD/target/release/examples/relay
p="uvb$$"
res=$(mktemp -d "/tmp/$p.XXXX")
tmp=$res/run
daemon_pid=""
iperf_pid=""

# Stops what one measurement started and deletes its namespaces.
cleanup() {
    if [ -n "$iperf_pid" ]; then kill "$iperf_pid" 2>/dev/null || true; wait "$iperf_pid" 2>/dev/null || true; fi
    if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
    for n in H U E; do ip netns del "$p-$n" 2>/dev/null || true; done
    rm -rf "$tmp"
    iperf_pid=""
    daemon_pid=""
}
trap 'cleanup; rm -rf "$res"' EXIT

# The namespaces and the parent; TX checksum offload on the peer U is off (an XSK needs
# complete checksums) unless $peer_tx is "on".
peer_tx=off
topology() {
    mkdir -p "$tmp"
    for n in H U E; do
        ip netns add "$p-$n"
        ip -n "$p-$n" link set lo up
    done
    ip -n "$p-H" link add name up0 type veth peer name eth0 netns "$p-U"
    ip -n "$p-H" link set up0 address 02:00:00:00:01:01 up
    ip -n "$p-U" link set eth0 address 02:00:00:00:fe:01 up
    ip netns exec "$p-U" ethtool -K eth0 tx "$peer_tx" >/dev/null
    ip -n "$p-U" addr add 192.0.2.254/24 dev eth0
    ip netns exec "$p-U" iperf3 -s -i 0 >/dev/null 2>&1 &
    iperf_pid=$!
    # The server listens before anything measures.
    for _ in $(seq 100); do
        ip netns exec "$p-U" ss -ltn 2>/dev/null | grep -q ':5201 ' && break
        sleep 0.05
    done
}

# Median of the numbers on stdin.
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else print a[int((NR+1)/2)]}'; }

# TCP receiver Mbit/s of one iperf3 run (args passed on).
tcp() {
    ip netns exec "$p-E" iperf3 -c 192.0.2.254 -t "$secs" -f m "$@" 2>&1 |
        awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i-1) }' || true
}

# UDP 64-byte datagrams delivered per second of one iperf3 run.
udp() {
    ip netns exec "$p-E" iperf3 -c 192.0.2.254 -t "$secs" -u -l 64 -b 0 "$@" 2>&1 |
        awk '/receiver/ {
            split($3, iv, "-"); d = iv[2] - iv[1];
            for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, lt, "/"); print int((lt[2] - lt[1]) / d) }
        }' || true
}

# Runs every measurement RUNS times; adds the figures to the samples of NAME (all rounds)
# and writes "tcp_up tcp_down udp_up udp_down" (the medians of those samples) to $res/NAME.
measure() {
    local name=$1 a b c d f
    f=$res/samples/${name//\//_}
    mkdir -p "$res/samples"
    # Wait until the endpoint reaches the peer (ARP, daemon attach).
    for _ in $(seq 50); do
        ip netns exec "$p-E" ping -c 1 -W 1 192.0.2.254 >/dev/null 2>&1 && break
        sleep 0.2
    done
    for i in $(seq "$runs"); do
        a=$(tcp); b=$(tcp -R); c=$(udp); d=$(udp -R)
        echo "  $name run $i/$runs: TCP E→U ${a:-?} Mbit/s, U→E ${b:-?} Mbit/s; UDP 64 B E→U ${c:-?} pps, U→E ${d:-?} pps"
        echo "${a:-nan}" >>"$f.tu"; echo "${b:-nan}" >>"$f.td"
        echo "${c:-nan}" >>"$f.uu"; echo "${d:-nan}" >>"$f.ud"
    done
    echo "$(median <"$f.tu") $(median <"$f.td") $(median <"$f.uu") $(median <"$f.ud")" \
        >"$res/${name//\//_}"
}

# The kernel's macvlan; with "xdp", while a uvlan daemon (AF_XDP) holds up0 for a network
# without endpoints: its XDP filter sits on up0 and passes every frame, which is what the
# kernel pays for the program alone (a veth runs native XDP on a copy of each frame).
kernel() {
    local with=${1:-}
    topology
    ip -n "$p-H" link add name mvb link up0 address 02:00:00:00:00:10 type macvlan mode bridge
    ip -n "$p-H" link set mvb netns "$p-E"
    ip -n "$p-E" link set mvb name eth0
    ip -n "$p-E" link set eth0 up
    ip -n "$p-E" addr add 192.0.2.10/24 dev eth0
    if [ "$with" = xdp ]; then
        mkdir -p "$tmp/root"
        ip netns exec "$p-H" "$uvlan" daemon --root "$tmp/root" --socket "$tmp/sock" \
            --wire-backend af_xdp 2>"$tmp/daemon.log" &
        daemon_pid=$!
        for _ in $(seq 100); do [ -S "$tmp/sock" ] && break; sleep 0.05; done
        UVLAN_SOCKET=$tmp/sock UVLAN_ROOT=$tmp/root "$uvlan" network create -d macvlan \
            -o parent=up0 --subnet 198.51.100.0/24 idle >/dev/null
        ip -n "$p-H" link show up0 | grep -q ' xdp' ||
            { echo "wire_throughput.sh: no XDP program on up0" >&2; exit 1; }
        measure kernel+xdp
    elif [ "$with" = txon ]; then
        measure kernel+txon
    else
        measure kernel
    fi
    cleanup
}

uvlan_run() {
    local backend=$1 fast=${2:-off} name=uvlan/$1
    [ "$fast" = on ] && name=uvlan/$1+fast
    [ "${3:-}" = txon ] && name=$name+txon
    topology
    mkdir -p "$tmp/root"
    ip netns exec "$p-H" "$uvlan" daemon --root "$tmp/root" --socket "$tmp/sock" \
        --wire-backend "$backend" --fast-path "$fast" 2>"$tmp/daemon.log" &
    daemon_pid=$!
    for _ in $(seq 100); do [ -S "$tmp/sock" ] && break; sleep 0.05; done
    export UVLAN_SOCKET=$tmp/sock UVLAN_ROOT=$tmp/root
    "$uvlan" network create -d macvlan -o parent=up0 --subnet 192.0.2.0/24 \
        --gateway 192.0.2.254 bench >/dev/null
    "$uvlan" network inspect bench | grep '"Mode"' | sed 's/^ */  wire: /'
    "$uvlan" network connect --ip 192.0.2.10 --mac-address 02:00:00:00:00:10 bench "$p-E"
    measure "$name"
    if [ "$fast" = on ]; then
        "$uvlan" stats bench | grep -A3 "^fast path" | sed 's/^/  /' || true
    fi
    "$uvlan" network disconnect bench "$p-E"
    "$uvlan" network rm bench >/dev/null
    cleanup
}

# The wire relay bound: uvlan's dataplane without the engine, TAP in E ↔ the wire of up0.
relay_run() {
    local backend=$1
    topology
    ip netns exec "$p-H" "$relay" --tap "$p-E" --parent up0 --host "$p-H" \
        --mac 02:00:00:00:00:10 --wire-backend "$backend" >"$tmp/relay.out" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 100); do grep -q "ready" "$tmp/relay.out" 2>/dev/null && break; sleep 0.05; done
    grep -o 'wire on .*' "$tmp/relay.out" | sed 's/^/  relay: /' || true
    ip -n "$p-E" link set eth0 address 02:00:00:00:00:10
    ip -n "$p-E" addr add 192.0.2.10/24 dev eth0
    ip -n "$p-E" link set eth0 up
    measure "relay/$backend"
    cleanup
}

# Measures one row of $rows.
run_row() {
    case $1 in
        kernel) kernel ;;
        kernel+xdp) kernel xdp ;;
        relay/af_xdp | relay/af_packet) relay_run "${1#relay/}" ;;
        uvlan/af_xdp | uvlan/af_packet) uvlan_run "${1#uvlan/}" ;;
        uvlan/af_xdp+fast | uvlan/af_packet+fast) b=${1#uvlan/}; uvlan_run "${b%+fast}" on ;;
        # With the peer's TX offloads on, its TCP reaches the parent as GSO frames (as a
        # NIC's GRO hands them up): the AF_PACKET fast path and the kernel again (an XSK
        # cannot take such frames).
        kernel+txon) peer_tx=on; kernel txon; peer_tx=off ;;
        uvlan/af_packet+fast+txon) peer_tx=on; uvlan_run af_packet on txon; peer_tx=off ;;
        *) echo "wire_throughput.sh: unknown row $1 (see ROWS in the usage)" >&2; exit 1 ;;
    esac
}

echo "wire ↔ endpoint, macvlan bridge, ${secs}s × ${runs} runs × ${rounds} rounds per figure (medians); $(uname -r), $(nproc) vCPU"
for round in $(seq "$rounds"); do
    [ "$rounds" -gt 1 ] && echo "round $round/$rounds"
    for r in $rows; do run_row "$r"; done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
# One table row: a label and four figures.
row() { printf '%-18s %14s %14s %16s %16s\n' "$@"; }
# The ratios of the medians in file $2 to those in file $3, labelled $1.
ratios() {
    local label=$1 a b c d e f g h
    [ -f "$res/$2" ] && [ -f "$res/$3" ] || return 0
    read -r a b c d <"$res/$2"
    read -r e f g h <"$res/$3"
    row "$label" "$(ratio "$a" "$e")" "$(ratio "$b" "$f")" "$(ratio "$c" "$g")" "$(ratio "$d" "$h")"
}
# The medians in file $2, labelled $1.
figures() {
    local label=$1 a b c d
    [ -f "$res/$2" ] || return 0
    read -r a b c d <"$res/$2"
    row "$label" "$a" "$b" "$c" "$d"
}
printf '\n'
row "" "TCP E→U Mb/s" "TCP U→E Mb/s" "UDP64 E→U pps" "UDP64 U→E pps"
figures "kernel macvlan" kernel
for b in af_xdp af_packet; do
    figures "relay $b" "relay_$b"
    ratios "  ÷ kernel" "relay_$b" kernel
    figures "uvlan $b" "uvlan_$b"
    ratios "  ÷ kernel" "uvlan_$b" kernel
    ratios "  ÷ relay bound" "uvlan_$b" "relay_$b"
done
figures "kernel, XDP on up0" kernel+xdp
ratios "  ÷ kernel" kernel+xdp kernel
figures "fast path af_xdp" uvlan_af_xdp+fast
ratios "  ÷ kernel" uvlan_af_xdp+fast kernel
ratios "  ÷ kernel+XDP" uvlan_af_xdp+fast kernel+xdp
figures "fast path af_packet" uvlan_af_packet+fast
ratios "  ÷ kernel" uvlan_af_packet+fast kernel
figures "kernel, peer tx on" kernel+txon
figures "fp af_packet tx on" uvlan_af_packet+fast+txon
ratios "  ÷ kernel tx on" uvlan_af_packet+fast+txon kernel+txon
