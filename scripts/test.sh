#!/usr/bin/env bash
# Runs every test: unit tests, the command line, the mParticle client against the
# stand-in, the whole service against a real single-node Kafka broker (and a real
# Prometheus scraping it), then the deploy/ and docker-compose.yml checks (pytest).
#
# Installs what the tests need when it is missing: Prometheus and promtool (Debian's
# prometheus package) and the Python packages of tests/deploy/requirements.txt. Starts
# the local broker (scripts/kafka.sh) if none is running, and stops it again at the end
# if this script started it. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "test.sh: installing Debian's prometheus package (prometheus, promtool)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if ! python3 -c "import kubernetes_validate, yaml, pytest" >/dev/null 2>&1; then
  echo "test.sh: installing tests/deploy/requirements.txt"
  python3 -m pip install -q --disable-pip-version-check -r tests/deploy/requirements.txt
fi

started_broker=no
if ! scripts/kafka.sh status >/dev/null 2>&1; then
  scripts/kafka.sh start
  started_broker=yes
fi
stop_broker() { if [ "$started_broker" = yes ]; then scripts/kafka.sh stop; fi; }
trap stop_broker EXIT

export MPF_TEST_KAFKA="127.0.0.1:${MPF_KAFKA_PORT:-9092}"
cargo test --locked "$@"
python3 -m pytest -q tests/deploy
