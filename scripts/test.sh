#!/usr/bin/env bash
# Runs every uvlan test: formatting, lints, unit tests, and the root system tests in network
# namespaces. Needs root (namespaces, TAPs, XDP); installs its tools first.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "scripts/test.sh needs root (it builds network namespaces): run it as root (or with sudo)" >&2; exit 1; }
scripts/deps.sh --test
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q
cargo build --workspace --bins
cargo test --workspace --no-fail-fast --lib --bins --tests -- --test-threads="${UVLAN_TEST_THREADS:-2}"
# The daemon's other I/O path: the run above takes io_uring (`--io auto` on this kernel);
# the fast system suites run once more on epoll + readv/writev (`--io plain`), as on kernels
# or sandboxes without io_uring. (The dataplane's own tests run every scenario on both.)
UVLAN_TEST_IO=plain cargo test -p uvlan-system-tests --no-fail-fast --test wire --test matrix \
    --test lifecycle -- --test-threads="${UVLAN_TEST_THREADS:-2}"
# The fast path: the suites whose endpoints `network connect`, Docker's Join (through the
# plugin socket) and CNI ADD make run once more with veth endpoints and the kernel cache
# (`--fast-path on`); tests/fast_path.rs covers it on its own. The crash test's short run
# (12 kills, each kind of operation) and the CNI tests take about 10 s together; the real
# dockerd's test (Join makes the veth pair dockerd moves) about a minute; the DHCP tests
# (leases through the cache-fronted endpoints, kills during exchanges) about 90 s; the labs
# (every testbed's daemon started with --fast-path on) about 100 s.
UVLAN_TEST_FAST_PATH=on cargo test -p uvlan-system-tests --no-fail-fast --test matrix \
    --test differential --test lifecycle --test wire --test observe --test crash --test dhcp \
    --test labs --test ipv6_only \
    -- --test-threads="${UVLAN_TEST_THREADS:-2}"
UVLAN_TEST_FAST_PATH=on cargo test -p uvlan-control --no-fail-fast --test cni --test docker \
    -- --test-threads="${UVLAN_TEST_THREADS:-2}"
cargo test --workspace --doc
