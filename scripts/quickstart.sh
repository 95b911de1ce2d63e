#!/usr/bin/env bash
# The service end to end on local defaults: a local Kafka broker, the mParticle stand-in,
# the forwarder; then the two sample loyalty events are published and shown arriving.
#
#   scripts/quickstart.sh           build (release), run, publish, show; Ctrl-C stops
#   scripts/quickstart.sh --once    the same, then stop the forwarder and the stand-in
#
# QUICKSTART_PROFILE=dev uses a debug build (faster to build, slower to run).
# The broker keeps running afterwards; scripts/kafka.sh stop stops it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

once=no
[ "${1:-}" = "--once" ] && once=yes
profile=${QUICKSTART_PROFILE:-release}
work=.cache/quickstart
mkdir -p "$work"
rm -f "$work/accepted.jsonl"

step() { printf '\n==> %s\n' "$*"; }

step "Kafka: a single-node KRaft broker on 127.0.0.1:9092"
scripts/kafka.sh start
# The retry topic has a partition for each source partition (2 topics x 3).
for spec in loyalty.point-add:3 loyalty.reward-claim:3 mparticle-forwarder.retry:6 mparticle-forwarder.dlq:3; do
  scripts/kafka.sh topics create "${spec%:*}" "${spec#*:}" 2>/dev/null | grep -v WARNING || true
done

step "Building ($profile)"
if [ "$profile" = release ]; then
  cargo build --locked --release --bins --features standin
  bin=target/release
else
  cargo build --locked --bins --features standin
  bin=target/debug
fi

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

step "mParticle stand-in on 127.0.0.1:8080 (records what it accepts in $work/accepted.jsonl)"
"$bin/mparticle-standin" --listen 127.0.0.1:8080 --api-key local-key --api-secret local-secret \
  --record-file "$work/accepted.jsonl" > "$work/standin.log" 2>&1 &
pids+=($!)

step "The forwarder, on local defaults (metrics on http://127.0.0.1:9090/metrics)"
export MPARTICLE_API_URL=http://127.0.0.1:8080/s2s/v2/events
export MPARTICLE_API_KEY=local-key
export MPARTICLE_API_SECRET=local-secret
export ADMIN_ADDR=127.0.0.1:9090
"$bin/mparticle-forwarder" > "$work/forwarder.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:9090/readyz >/dev/null 2>&1 && break
  sleep 0.2
done

step "Publishing the sample events"
printf 'cust-280e674c\t%s\n' "$(tr -d '\n' < tests/data/events/point_add.json)" | scripts/kafka.sh produce loyalty.point-add
printf 'cust-280e674c\t%s\n' "$(tr -d '\n' < tests/data/events/reward_claim.json)" | scripts/kafka.sh produce loyalty.reward-claim

step "What mParticle (the stand-in) received"
for _ in $(seq 1 100); do
  [ "$(wc -l < "$work/accepted.jsonl" 2>/dev/null || echo 0)" -ge 2 ] && break
  sleep 0.2
done
if [ "$(wc -l < "$work/accepted.jsonl" 2>/dev/null || echo 0)" -lt 2 ]; then
  echo "the events did not arrive; see $work/forwarder.log" >&2
  exit 1
fi
python3 -m json.tool --json-lines "$work/accepted.jsonl" 2>/dev/null || cat "$work/accepted.jsonl"

step "Metrics"
curl -fs http://127.0.0.1:9090/metrics | grep -E '^mparticle_forwarder_(events_(consumed|delivered)_total|http_requests_total)'

if [ "$once" = yes ]; then
  step "Done (--once): stopping the forwarder and the stand-in"
  exit 0
fi
step "Running. Publish more with scripts/kafka.sh produce loyalty.point-add; Ctrl-C stops."
wait
