#!/usr/bin/env bash
# The end-to-end benchmark (see BENCHMARKS.md): starts the local broker if needed, builds
# the release forwarder, and runs benches/pipeline.rs.
#
#   scripts/bench.sh [--events N]     default 1,000,000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/kafka.sh start
cargo build --locked --release --bins
MPF_BENCH_FORWARDER=target/release/mparticle-forwarder cargo bench --locked --bench pipeline -- "$@"
