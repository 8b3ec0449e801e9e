#!/usr/bin/env bash
# Builds uvlan and runs a lab: with no argument the embedded default testbed (the seed's
# IPvlan L3 two-subnet example, no parent NIC needed), else a testbed name or file.
# Needs root (it creates network namespaces); installs its tools first.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "scripts/lab.sh needs root (it creates network namespaces): run it as root (or with sudo)" >&2; exit 1; }
scripts/deps.sh
cargo build --release -q -p uvlan-control --bin uvlan
exec target/release/uvlan lab "$@"
