#!/usr/bin/env bash
# Runs every test: unit tests, the command line, the mParticle client against the
# stand-in, and the whole service against a real single-node Kafka broker.
#
# Starts the local broker (scripts/kafka.sh) if none is running, and stops it again at the
# end if this script started it. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started_broker=no
if ! scripts/kafka.sh status >/dev/null 2>&1; then
  scripts/kafka.sh start
  started_broker=yes
fi
stop_broker() { if [ "$started_broker" = yes ]; then scripts/kafka.sh stop; fi; }
trap stop_broker EXIT

export MPF_TEST_KAFKA="127.0.0.1:${MPF_KAFKA_PORT:-9092}"
cargo test --locked "$@"
