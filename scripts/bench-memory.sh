#!/usr/bin/env bash
# The memory benchmark (see BENCHMARKS.md): starts the local broker if needed, builds the
# release forwarder, and runs benches/memory.rs: a backlog of 100 KB events drained at
# 200 batches/s with and without the byte bound. About two minutes per 4,000 events.
#
#   scripts/bench-memory.sh [--events N]     default 4,000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/kafka.sh start
cargo build --locked --release --bins
MPF_BENCH_FORWARDER=target/release/mparticle-forwarder cargo bench --locked --bench memory -- "$@"
