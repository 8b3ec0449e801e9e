#!/usr/bin/env bash
# Benchmark-style crash injection (not a CI test; the suite runs a short version of the same
# test): kill -9 of the daemon at random points of connect, disconnect, run --rm, Docker's
# Join and Leave (plugin protocol) and CNI ADD and DEL, then a restart, ITERATIONS times
# (default 150). After each restart the test checks that every endpoint is all or nothing
# (interface, address, record, traffic) and that no address is on two interfaces. It prints
# per operation how many kills it made and how many interrupted operations the daemon's
# start finished or rolled back.
#
#   sudo bench/crash_injection.sh [ITERATIONS] [SEED]
#
# Namespaces carry a unique prefix and are deleted by the test, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (it creates namespaces)" >&2; exit 1; }
export UVLAN_CRASH_ITERATIONS=${1:-150}
[ -n "${2:-}" ] && export UVLAN_CRASH_SEED=$2
cargo build -q --workspace --bins
cargo test -q -p uvlan-system-tests --test crash -- --nocapture --test-threads=1 2>&1 |
    grep -v '^running\|^$\|^test result'
