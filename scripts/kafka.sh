#!/usr/bin/env bash
# A local single-node Apache Kafka broker (KRaft, broker and controller in one JVM) for
# development, the quickstart, the tests and CI.
#
#   scripts/kafka.sh start     fetch the jars if needed, format once, start, wait until it answers
#   scripts/kafka.sh stop      stop the broker this script started
#   scripts/kafka.sh status    exit 0 if it runs and answers
#   scripts/kafka.sh reset     stop and delete its data (topics, offsets)
#   scripts/kafka.sh topics create NAME PARTITIONS | list
#   scripts/kafka.sh produce TOPIC < lines     one record per line: KEY<TAB>VALUE
#   scripts/kafka.sh consume TOPIC [extra kafka-console-consumer args]
#
# The jars come from Maven Central through Maven (deploy/kafka/pom.xml pins the release)
# and are cached in $MPF_CACHE_DIR (default ~/.cache/mparticle-forwarder). Starting twice
# does not start a second broker: the pid file and the port are checked first.
set -euo pipefail

KAFKA_VERSION=4.1.2
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${MPF_CACHE_DIR:-$HOME/.cache/mparticle-forwarder}
LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
STATE_DIR=${MPF_KAFKA_STATE_DIR:-$CACHE_DIR/kafka-state}
PORT=${MPF_KAFKA_PORT:-9092}
CONTROLLER_PORT=${MPF_KAFKA_CONTROLLER_PORT:-9093}
PID_FILE="$STATE_DIR/broker.pid"
LOG_DIR="$STATE_DIR/logs"
BOOTSTRAP="127.0.0.1:$PORT"

say() { printf 'kafka.sh: %s\n' "$*" >&2; }

fetch_jars() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  say "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIBS"
  rm -rf "$LIBS"
  mkdir -p "$LIBS"
  mvn -B -q -Dstyle.color=never -f "$ROOT/deploy/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DoutputDirectory="$LIBS" -DincludeScope=runtime
  touch "$LIBS/.complete"
}

java_run() {
  java -cp "$LIBS/*" -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$LOG_DIR" "$@"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid=$(cat "$PID_FILE")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

write_config() {
  cat > "$STATE_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$STATE_DIR/data
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests start many short-lived consumer groups; the default 3 s delay only slows them.
group.initial.rebalance.delay.ms=0
# Topics are created on purpose (scripts/quickstart.sh, the tests), never by a typo.
auto.create.topics.enable=false
log.retention.hours=24
PROPS
}

wait_ready() {
  local pid=$1 deadline=$((SECONDS + 120))
  until port_open "$PORT" && grep -q "Kafka Server started" "$LOG_DIR/server.log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "the broker exited during start-up; last lines of $LOG_DIR/server.log and stdout:"
      tail -n 30 "$LOG_DIR/server.log" "$LOG_DIR/stdout.log" >&2 || true
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      say "the broker did not answer within 120 s; see $LOG_DIR/server.log"
      return 1
    fi
    sleep 0.5
  done
}

start() {
  if pid=$(running_pid); then
    say "already running (pid $pid) on $BOOTSTRAP"
    return 0
  fi
  if port_open "$PORT"; then
    say "port $PORT is taken by a process this script did not start; stop it or set MPF_KAFKA_PORT"
    return 1
  fi
  fetch_jars
  mkdir -p "$STATE_DIR" "$LOG_DIR"
  write_config
  if [ ! -f "$STATE_DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$(java_run kafka.tools.StorageTool random-uuid)
    java_run kafka.tools.StorageTool format -t "$cluster_id" -c "$STATE_DIR/server.properties" >/dev/null
  fi
  : > "$LOG_DIR/server.log"
  nohup java -Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -cp "$LIBS/*" -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$LOG_DIR" kafka.Kafka "$STATE_DIR/server.properties" \
    > "$LOG_DIR/stdout.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$PID_FILE"
  wait_ready "$pid"
  say "running (pid $pid) on $BOOTSTRAP; log: $LOG_DIR/server.log"
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    say "not running"
    rm -f "$PID_FILE"
    return 0
  fi
  kill "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PID_FILE"; say "stopped"; return 0; }
    sleep 0.5
  done
  say "no clean stop within 30 s; killing pid $pid"
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if pid=$(running_pid) && port_open "$PORT"; then say "running (pid $pid) on $BOOTSTRAP"; else say "not running"; exit 1; fi ;;
  reset) stop; rm -rf "$STATE_DIR"; say "data deleted" ;;
  fetch) fetch_jars ;;
  topics)
    fetch_jars
    case "${2:-}" in
      create) java_run org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
                --create --if-not-exists --topic "$3" --partitions "${4:-3}" --replication-factor 1 ;;
      list) java_run org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --list ;;
      *) say "usage: $0 topics create NAME PARTITIONS | list"; exit 2 ;;
    esac ;;
  produce)
    # One record per input line, "KEY<TAB>VALUE"; KEY may be empty.
    fetch_jars
    topic=${2:?usage: $0 produce TOPIC < lines}
    java_run org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$BOOTSTRAP" --topic "$topic" \
      --property parse.key=true --property key.separator=$'\t' ;;
  consume)
    fetch_jars
    topic=${2:?usage: $0 consume TOPIC}; shift 2
    java_run org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$BOOTSTRAP" \
      --topic "$topic" --from-beginning --property print.headers=true --property print.key=true "$@" ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
