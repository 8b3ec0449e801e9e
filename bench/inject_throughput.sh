#!/usr/bin/env bash
# Cost of the host-stack injection path (port::inject): frames/s written to a parent's
# injection TAP and received by a UDP socket bound on the parent's address, next to plain
# writes to a TAP without a program, in one run (release build, root, one namespace of its
# own with a veth parent; nothing touches the real uplink). Numbers are printed, never
# asserted.
#
# What runs: the root test `injected_frames_reach_the_host_and_not_uvlans_sockets` in
# dataplane/tests/inject.rs, with UVLAN_BENCH_FRAMES frames per measurement.
#
# Usage: bench/inject_throughput.sh [FRAMES (default 200000)] [RUNS (default 3)]
set -euo pipefail
frames=${1:-200000}
runs=${2:-3}
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "inject_throughput.sh: run as root (it creates a namespace, a veth pair and TAPs)" >&2
    exit 1
fi
cargo test --release -p uvlan-dataplane --test inject --no-run
for i in $(seq "$runs"); do
    echo "run $i/$runs"
    UVLAN_BENCH_FRAMES=$frames cargo test -q --release -p uvlan-dataplane --test inject \
        -- --exact injected_frames_reach_the_host_and_not_uvlans_sockets --nocapture 2>&1 |
        grep -E '^inject:'
done
