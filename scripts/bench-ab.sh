#!/usr/bin/env bash
# Compares the CPU cost of two forwarder binaries with paired drains (BENCHMARKS.md,
# "Measuring a change"): each round drains 1,000,000 events with both, in the order
# A B then B A (on this machine the second run of a pair tends to be cheaper), and the
# median CPU seconds per million events of each binary are printed at the end.
#
#   scripts/bench-ab.sh ROUNDS BINARY_A BINARY_B      e.g. 3 /tmp/before target/release/mparticle-forwarder
#
# Build each binary with `cargo build --release --bins` at its commit and copy it aside.
# Needs the local broker (`scripts/kafka.sh start`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:?rounds}
a=${2:?binary A}
b=${3:?binary B}
cargo bench --locked --bench pipeline --no-run 2>/dev/null
bench=$(find target/release/deps -maxdepth 1 -type f -executable -name 'pipeline-*' -printf '%T@ %p\n' |
    sort -n | tail -1 | cut -d' ' -f2)

drain() {
    MPF_BENCH_ROUNDS=1 MPF_BENCH_SKIP_LATENCY=1 MPF_BENCH_FORWARDER=$1 "$bench" 2>&1 |
        sed -n 's/^forwarder: .* \([0-9.]*\) CPU s per million events.*/\1/p'
}

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq 1 "$rounds"); do
    if ((round % 2)); then order=("$a" "$b"); else order=("$b" "$a"); fi
    for binary in "${order[@]}"; do
        cpu=$(drain "$binary")
        label=$([[ $binary == "$a" ]] && echo A || echo B)
        echo "round $round $label $binary: ${cpu:-failed} CPU s per million events"
        echo "$label ${cpu:-nan}" >>"$results"
    done
done
for label in A B; do
    awk -v l="$label" '$1 == l && $2 != "nan" { print $2 }' "$results" | sort -n |
        awk -v l="$label" '{ v[NR] = $1 } END {
            if (NR == 0) { print l ": no run finished"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%s: median %.2f CPU s per million events over %d runs (%.2f to %.2f)\n", l, m, NR, v[1], v[NR]
        }'
done
