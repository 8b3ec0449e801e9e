#!/usr/bin/env bash
# Fast path benchmark (not a test): endpoint ↔ endpoint TCP, 64-byte UDP and ping p50/p99
# through the uvlan slow path (TAP endpoints), the uvlan fast path (veth endpoints with the
# exact-match tcx cache, see dataplane/src/port/fast_path/) and the kernel's macvlan bridge
# (veth parent), in the same run; prints each and the ratios to the kernel. Release build,
# root, namespaces it creates and deletes only; documentation addresses (192.0.2.0/24).
#
# What runs: the ignored root test `benchmark_slow_path_fast_path_kernel` in
# dataplane/tests/fast_path.rs. Per path:
#   iperf3 -c IP -t SECS -J                     (TCP, sum_received)
#   iperf3 -c IP -t SECS -u -l 64 -b 0 -J       (UDP 64 B, delivered packets/s)
#   ping -c 300 -i 0.005 IP                     (RTT percentiles)
# Numbers are printed, never asserted.
#
# Usage: bench/fast_path.sh [SECONDS_PER_MEASUREMENT (default 5)] [RUNS (default 1)]
set -euo pipefail
secs=${1:-5}
runs=${2:-1}
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "fast_path.sh: run as root (it creates namespaces, TAPs and veths)" >&2
    exit 1
fi
command -v iperf3 >/dev/null || { echo "fast_path.sh: iperf3 is not installed" >&2; exit 1; }
cargo test --release -q -p uvlan-dataplane --test fast_path --no-run
for i in $(seq "$runs"); do
    echo "run $i/$runs"
    UVLAN_BENCH_SECS=$secs cargo test -q --release -p uvlan-dataplane --test fast_path \
        benchmark_slow_path_fast_path_kernel -- --exact --ignored --nocapture 2>&1 |
        grep -E '^(fast path|  )'
done
