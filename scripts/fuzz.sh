#!/usr/bin/env bash
# Runs uvlan's fuzz targets one after another (cargo-fuzz, libFuzzer), each for RUNS
# executions or MAX_SECONDS, whichever comes first, and prints one line per target:
# executions, seconds, coverage (libFuzzer's cov: and ft:) and corpus size.
#
#   scripts/fuzz.sh [TARGET...]          (default: every target)
#   RUNS=10000000 MAX_SECONDS=7200 scripts/fuzz.sh docker_http tap_frame
#   SANITIZER=none scripts/fuzz.sh       (no AddressSanitizer: several times the executions per second)
#
# The fuzzed code is safe Rust (no unsafe block on any target's path), so what a target can
# find is a panic, an overflow (debug assertions are on), a timeout or unbounded memory; all of
# those are found without AddressSanitizer too. SANITIZER defaults to address.
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The corpus grows in
# <crate>/fuzz/corpus/TARGET (not committed; the committed seeds/ and testbeds/ start it); a
# crash stops its target and leaves the input in <crate>/fuzz/artifacts/TARGET: keep it as a
# regression test (see docs/reliability.md, "Fuzzing"). Logs go to target/fuzz-logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
RUNS=${RUNS:-10000000}
MAX_SECONDS=${MAX_SECONDS:-14400}
SANITIZER=${SANITIZER:-address}
logs="$root/target/fuzz-logs"
mkdir -p "$logs"

# target -> crate directory, extra corpus directory (read only), dictionary
declare -A crate seeds dict
for t in decide tap_frame wire_frame capture_read; do crate[$t]=dataplane; done
for t in docker_http docker_driver api_json cni lab_toml; do
    crate[$t]=control
    seeds[$t]=seeds/$t
    dict[$t]=dicts/json.dict
done
dict[docker_http]=dicts/http.dict
dict[lab_toml]=dicts/toml.dict
seeds[lab_toml]=../../testbeds

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(docker_http docker_driver api_json cni lab_toml tap_frame wire_frame decide capture_read)

status=0
for t in "${targets[@]}"; do
    [ -n "${crate[$t]:-}" ] || { echo "unknown fuzz target $t" >&2; exit 2; }
    dir="$root/${crate[$t]}/fuzz"
    mkdir -p "$dir/corpus/$t"
    args=(-runs="$RUNS" -max_total_time="$MAX_SECONDS" -timeout=10 -print_final_stats=1)
    [ -n "${dict[$t]:-}" ] && args+=(-dict="${dict[$t]}")
    corpora=("corpus/$t")
    [ -n "${seeds[$t]:-}" ] && corpora+=("${seeds[$t]}")
    log="$logs/$t.log"
    start=$(date +%s)
    if (cd "$dir" && nice -n 10 cargo +nightly fuzz run -s "$SANITIZER" "$t" "${corpora[@]}" -- "${args[@]}") >"$log" 2>&1; then
        result=ok
    else
        result="FAILED (see $log and ${crate[$t]}/fuzz/artifacts/$t)"
        status=1
    fi
    secs=$(($(date +%s) - start))
    runs=$(grep -aoE 'Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' || echo "?")
    last=$(grep -aE '^#[0-9]+' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || echo "?")
    ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || echo "?")
    corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<<"$last" | cut -d' ' -f2 || echo "?")
    echo "$t: $result: $runs runs in ${secs} s, cov: $cov ft: $ft corpus: $corp"
done
exit $status
