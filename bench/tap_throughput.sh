#!/usr/bin/env bash
# TAP ↔ uvlan dataplane loop ↔ TAP throughput against the kernel's macvlan bridge, measured
# in the same run (release build, root, namespaces only; nothing touches the real uplink).
#
# What runs: the root test `throughput_tap_to_tap_vs_kernel_macvlan` in dataplane/tests/run.rs.
# It builds an isolated ipvlan L2 network with two TAP endpoints in two fresh namespaces, then
# a kernel macvlan bridge (veth parent, two macvlan ports in two namespaces), and for each runs
#   iperf3 -c IP -t SECS -J                     (TCP, sum_received)
#   iperf3 -c IP -t SECS -u -l 64 -b 0 -J       (UDP 64 B: sent and delivered packets/s)
# then prints both and the ratio uvlan/kernel. Numbers are printed, never asserted.
#
# Usage: bench/tap_throughput.sh [SECONDS_PER_RUN (default 5)] [RUNS (default 3)]
set -euo pipefail
secs=${1:-5}
runs=${2:-3}
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "tap_throughput.sh: run as root (it creates namespaces, TAPs and veths)" >&2
    exit 1
fi
command -v iperf3 >/dev/null || { echo "tap_throughput.sh: iperf3 is not installed" >&2; exit 1; }
test_name=throughput_tap_to_tap_vs_kernel_macvlan
cargo test --release -p uvlan-dataplane --test run --no-run
for i in $(seq "$runs"); do
    echo "run $i/$runs"
    UVLAN_BENCH_SECS=$secs cargo test -q --release -p uvlan-dataplane --test run "$test_name" \
        -- --exact --nocapture 2>&1 | grep -E '^(throughput|  )'
done
