#!/usr/bin/env bash
# The pacing benchmark (see BENCHMARKS.md): starts the local broker if needed, builds the
# release forwarder, and runs benches/pacing.rs: 1-3 replicas against one shared account
# limit, then settling after the limit drops and rises. About eight minutes.
#
#   scripts/bench-pacing.sh [--events N] [--limit L]     default 6,000 and 300
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/kafka.sh start
cargo build --locked --release --bins
MPF_BENCH_FORWARDER=target/release/mparticle-forwarder cargo bench --locked --bench pacing -- "$@"
