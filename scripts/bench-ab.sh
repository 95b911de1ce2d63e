#!/usr/bin/env bash
# Compares the CPU cost of two forwarder binaries with paired drains (BENCHMARKS.md,
# "Measuring a change"): one preload of 1,000,000 events, then each round drains them with
# both binaries, in the order A B then B A, each in a fresh group with a fresh sink. Prints
# every drain, the medians, and the median of B/A within each round, which is the figure
# to read: the machine's speed drifts between minutes, a round's pair is seconds apart.
#
#   scripts/bench-ab.sh ROUNDS BINARY_A BINARY_B      e.g. 8 /tmp/before target/release/mparticle-forwarder
#
# Build each binary with `cargo build --release --bins` at its commit and copy it aside.
# Needs the local broker (`scripts/kafka.sh start`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:?rounds}
a=${2:?binary A}
b=${3:?binary B}
MPF_BENCH_ROUNDS=$rounds MPF_BENCH_COMPARE="$a $b" cargo bench --locked --bench pipeline
