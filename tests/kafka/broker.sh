#!/usr/bin/env bash
# Apache Kafka (KRaft) for cloudwarden's tests, benchmarks and `make demo-broker`, assembled from
# Maven Central by tests/kafka/pom.xml and run with `java`:
#   install        copy the broker's jars into .tools/kafka/libs (idempotent; Maven's local
#                  repository is .tools/m2, so CI can cache it)
#   start          one node (broker + controller) on 127.0.0.1:${KAFKA_PORT:-19092}, storage
#                  formatted in a fresh temp dir; returns once a metadata request succeeds
#   stop           stop it (SIGTERM, then SIGKILL after 20 s)
#   cluster-start  three nodes on ports KAFKA_PORT..KAFKA_PORT+2, replication 3
#   cluster-stop   stop them
# The e2e tests start their own nodes (tests/it/broker.rs); this script is for people and for
# runs against a shared broker: `KAFKA_BOOTSTRAP=127.0.0.1:19092 cargo test`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TOOLS="$ROOT/.tools"
LIBS="${KAFKA_LIBS:-$TOOLS/kafka/libs}"
RUN="$TOOLS/kafka/run"
PORT="${KAFKA_PORT:-19092}"
JAVA_OPTS="${KAFKA_JAVA_OPTS:--Xmx512m -Xms64m -XX:+UseSerialGC}"
CLUSTER_ID="Y2xvdWR3YXJkZW4tdGVzdA"

install() {
  if compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null && [ "$LIBS/.stamp" -nt "$ROOT/tests/kafka/pom.xml" ]; then
    return 0
  fi
  command -v java >/dev/null && command -v mvn >/dev/null || {
    echo "java and mvn are needed (apt-get install openjdk-17-jre-headless maven)" >&2; exit 1; }
  rm -rf "$LIBS"
  mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$TOOLS/m2" -f "$ROOT/tests/kafka/pom.xml" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS"
  touch "$LIBS/.stamp"
  echo "kafka: $(basename "$(ls "$LIBS"/kafka_2.13-*.jar)") and $(ls "$LIBS" | wc -l) jars in $LIBS"
}

kjava() { java $JAVA_OPTS -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$LIBS/*" "$@"; }

# properties ID N DATA: node ID of an N-node cluster on PORT.. (client) and PORT+100.. (controller)
properties() {
  local id=$1 n=$2 data=$3 voters="" i rf min_isr
  for i in $(seq 1 "$n"); do voters="$voters${voters:+,}$i@127.0.0.1:$((PORT + 99 + i))"; done
  rf=$n; [ "$rf" -gt 3 ] && rf=3
  min_isr=1; [ "$n" -ge 3 ] && min_isr=2
  cat <<PROPS
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$((PORT + id - 1)),CONTROLLER://127.0.0.1:$((PORT + 99 + id))
advertised.listeners=PLAINTEXT://127.0.0.1:$((PORT + id - 1))
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
PROPS
}

# ready ADDR: until an ApiVersions+Metadata round trip answers (via kafka-clients' admin tool)
ready() {
  local port=$1 i
  for i in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && \
       kjava org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "127.0.0.1:$port" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.4
  done
  return 1
}

start_nodes() {
  local n=$1 id dir
  install
  mkdir -p "$RUN"
  if [ -f "$RUN/pids" ] && xargs -r kill -0 <"$RUN/pids" 2>/dev/null; then
    echo "kafka already running ($(cat "$RUN/bootstrap"))"; return 0
  fi
  dir="$(mktemp -d "${TMPDIR:-/tmp}/cloudwarden-kafka.XXXXXX")"
  echo "$dir" >"$RUN/dir"; : >"$RUN/pids"
  for id in $(seq 1 "$n"); do
    properties "$id" "$n" "$dir/node-$id" >"$dir/node-$id.properties"
    kjava kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$dir/node-$id.properties" >/dev/null
  done
  for id in $(seq 1 "$n"); do
    nohup java $JAVA_OPTS -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$LIBS/*" \
      kafka.Kafka "$dir/node-$id.properties" >"$dir/node-$id.log" 2>&1 &
    echo $! >>"$RUN/pids"
  done
  local addrs=""
  for id in $(seq 1 "$n"); do addrs="$addrs${addrs:+,}127.0.0.1:$((PORT + id - 1))"; done
  echo "$addrs" >"$RUN/bootstrap"
  for id in $(seq 1 "$n"); do
    ready $((PORT + id - 1)) || { echo "kafka node $id not ready; log:" >&2; tail -40 "$dir/node-$id.log" >&2; stop_nodes; exit 1; }
  done
  echo "kafka ready: KAFKA_BOOTSTRAP=$addrs"
}

stop_nodes() {
  [ -f "$RUN/pids" ] || return 0
  local pid i
  xargs -r kill <"$RUN/pids" 2>/dev/null || true
  for i in $(seq 1 100); do
    xargs -r kill -0 <"$RUN/pids" 2>/dev/null || break
    sleep 0.2
  done
  while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done <"$RUN/pids"
  [ -f "$RUN/dir" ] && rm -rf "$(cat "$RUN/dir")"
  rm -f "$RUN/pids" "$RUN/dir" "$RUN/bootstrap"
}

case "${1:-}" in
  install) install ;;
  start) start_nodes 1 ;;
  cluster-start) start_nodes 3 ;;
  stop|cluster-stop) stop_nodes ;;
  *) echo "usage: $0 {install|start|stop|cluster-start|cluster-stop}" >&2; exit 2 ;;
esac
