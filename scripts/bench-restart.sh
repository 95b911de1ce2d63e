#!/usr/bin/env bash
# The restart benchmark (see BENCHMARKS.md): starts the local broker if needed, builds the
# release forwarder, and runs benches/restart.rs: a SIGKILL and an immediate restart, with
# dynamic and with static group membership. About two minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/kafka.sh start
cargo build --locked --release --bins
MPF_BENCH_FORWARDER=target/release/mparticle-forwarder cargo bench --locked --bench restart -- "$@"
