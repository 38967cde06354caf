#!/usr/bin/env bash
# Starts and stops the real engines msync's production path runs on, on this
# machine and on 127.0.0.1 only: a single-node Apache Cassandra and a RocketMQ
# name server + broker. The jars come from Maven Central through the wrapper
# POMs in engines/ (cached in ~/.m2); nothing else is downloaded.
#
#   scripts/engines.sh up     [cassandra|namesrv|broker|rocketmq ...]   (default: all)
#   scripts/engines.sh down   [cassandra|namesrv|broker|rocketmq ...]
#   scripts/engines.sh status
#   scripts/engines.sh env    # prints MSYNC_CASSANDRA_HOSTS=... MSYNC_ROCKETMQ_NAMESRV=...
#
# `up` returns once each engine really serves: Cassandra answers a CQL
# OPTIONS request, the name server lists the broker in its cluster info.
# `down` stops by the PIDs `up` recorded (SIGTERM, SIGKILL after a grace).
#
# Everything lives under MSYNC_ENGINES_DIR (default ./.engines at the repo
# root): <dir>/cassandra/{lib,conf,data,logs,tmp}, <dir>/rocketmq/{lib,...}.
# Several sets can run side by side: give each its own dir and ports.
#   MSYNC_CASSANDRA_PORT          CQL port (9042)
#   MSYNC_CASSANDRA_STORAGE_PORT  internode port (7000)
#   MSYNC_CASSANDRA_HEAP          heap (1g)
#   MSYNC_CASSANDRA_PAXOS         paxos_variant, v1 (5.0's default) or v2
#   MSYNC_NAMESRV_PORT            name server port (9876)
#   MSYNC_BROKER_PORT             broker port (10911); the broker also binds
#                                 PORT-2 (fast channel) and PORT+1 (HA)
#   MSYNC_BROKER_HEAP             broker heap (512m)
#   MSYNC_BROKER_LOCK_LIVE_MS     how long the broker keeps a consumer's queue lock
#                                 without renewal (15000; RocketMQ's default is 60000):
#                                 a kill -9'd job's queues are free again after it.
#                                 msync's consumer renews every 5s (pkg/queue/rocketmq).
#   MSYNC_ENGINES_FRESH=1         `up` first deletes the data of the engines it starts
#                                 (test-integration does: a node with old data starts slower)
#   MSYNC_ENGINES_TIMEOUT         seconds to wait for each engine (480; a cold
#                                 Cassandra took 188s at load average 80)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${MSYNC_ENGINES_DIR:-$ROOT/.engines}"
CQL_PORT="${MSYNC_CASSANDRA_PORT:-9042}"
STORAGE_PORT="${MSYNC_CASSANDRA_STORAGE_PORT:-7000}"
C_HEAP="${MSYNC_CASSANDRA_HEAP:-1g}"
PAXOS="${MSYNC_CASSANDRA_PAXOS:-v1}"
NS_PORT="${MSYNC_NAMESRV_PORT:-9876}"
BROKER_PORT="${MSYNC_BROKER_PORT:-10911}"
B_HEAP="${MSYNC_BROKER_HEAP:-512m}"
B_LOCK_MS="${MSYNC_BROKER_LOCK_LIVE_MS:-15000}"
TIMEOUT="${MSYNC_ENGINES_TIMEOUT:-480}"
CASSANDRA_VERSION=5.0.6 # keep in step with engines/cassandra/pom.xml
ROCKETMQ_VERSION=5.3.3  # keep in step with engines/rocketmq/pom.xml

say() { echo "engines: $*" >&2; }
die() { echo "engines: $*" >&2; exit 1; }

[[ "$PAXOS" == v1 || "$PAXOS" == v2 ]] || die "MSYNC_CASSANDRA_PAXOS=$PAXOS: want v1 or v2"
for p in CQL_PORT:MSYNC_CASSANDRA_PORT STORAGE_PORT:MSYNC_CASSANDRA_STORAGE_PORT NS_PORT:MSYNC_NAMESRV_PORT \
  BROKER_PORT:MSYNC_BROKER_PORT TIMEOUT:MSYNC_ENGINES_TIMEOUT B_LOCK_MS:MSYNC_BROKER_LOCK_LIVE_MS; do
  v="${p%%:*}"
  [[ "${!v}" =~ ^[1-9][0-9]{0,4}$ ]] || die "${p#*:}=${!v}: want a number (see the header of $0 for the variables)"
done
(( BROKER_PORT > 2 && BROKER_PORT < 65535 )) || die "MSYNC_BROKER_PORT=$BROKER_PORT: want 3..65534 (the broker also binds PORT-2 and PORT+1)"
[[ "$DIR" = /* ]] || DIR="$PWD/$DIR"
C="$DIR/cassandra"
R="$DIR/rocketmq"

# ---------- preflight ----------

JAVA=""
need_java() {
  [[ -n "$JAVA" ]] && return
  local j="${JAVA_HOME:+$JAVA_HOME/bin/java}"
  [[ -x "$j" ]] || j="$(command -v java || true)"
  [[ -x "$j" ]] || die "no java found: install OpenJDK 17 (apt-get install -y openjdk-17-jdk-headless) or set JAVA_HOME"
  local v
  v="$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
  case "$v" in
    11|17) ;;
    *) die "java at $j is version '$v': Cassandra $CASSANDRA_VERSION runs on Java 11 or 17 only (set JAVA_HOME to a JDK 17)" ;;
  esac
  JAVA="$j"
}

check_disk() {
  mkdir -p "$DIR" 2>/dev/null || die "cannot create $DIR: pick a writable MSYNC_ENGINES_DIR"
  local line used avail
  line="$(df -Pk "$DIR" | awk 'NR==2 {print $3, $4}')"
  used="${line% *}"; avail="${line#* }"
  # The broker refuses sends once its disk is 90% used; Cassandra needs room to flush.
  if (( avail < 3 * 1024 * 1024 )) || (( used * 100 / (used + avail) >= 80 )); then
    die "disk of $DIR is too full ($(( avail / 1024 )) MiB free, $(( used * 100 / (used + avail) ))% used): free space or set MSYNC_ENGINES_DIR to a bigger disk (want >= 3 GiB free and < 80% used)"
  fi
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
check_port() { # port what variable
  if port_busy "$1"; then
    die "port 127.0.0.1:$1 ($2) is already in use: stop what listens there (ss -ltnp | grep :$1) or set $3 to a free port"
  fi
}

# resolve <engine>: copies the runtime jars of engines/<engine>/pom.xml into
# <dir>/<engine>/lib once per POM content.
resolve() {
  local eng="$1" pom="$ROOT/engines/$1/pom.xml" lib="$DIR/$1/lib"
  local sum; sum="$(sha256sum "$pom" | cut -c1-16)"
  [[ -f "$lib/.resolved-$sum" ]] && return
  command -v mvn >/dev/null || die "no mvn found: install Maven 3 (apt-get install -y maven); it fetches the $eng jars from Maven Central"
  rm -rf "$lib"; mkdir -p "$lib" "$DIR/$1/logs"
  say "$eng: resolving jars from Maven Central (first run only; cached in ~/.m2)"
  if ! mvn -B -q -f "$pom" org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$lib" >"$DIR/$1/logs/maven.log" 2>&1; then
    die "$eng: Maven could not resolve $pom (Maven Central reachable? see $DIR/$1/logs/maven.log)"
  fi
  touch "$lib/.resolved-$sum"
}

# ---------- pid files ----------

# alive <pidfile> <marker>: the pid in the file runs and its command line still
# carries the marker (our data dir), so a recycled pid is never signalled.
alive() {
  local pid
  [[ -f "$1" ]] || return 1
  pid="$(cat "$1")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}

stop_pid() { # name pidfile marker grace
  local name="$1" pf="$2" marker="$3" grace="$4" pid i
  if ! alive "$pf" "$marker"; then rm -f "$pf"; return; fi
  pid="$(cat "$pf")"
  say "$name: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for (( i = 0; i < grace * 5; i++ )); do
    alive "$pf" "$marker" || { rm -f "$pf"; return; }
    sleep 0.2
  done
  say "$name: pid $pid still running after ${grace}s, killing it"
  kill -KILL "$pid" 2>/dev/null || true
  for (( i = 0; i < 50; i++ )); do alive "$pf" "$marker" || break; sleep 0.2; done
  rm -f "$pf"
}

# wait_for <name> <pidfile> <marker> <log> <check-fn>
wait_for() {
  local name="$1" pf="$2" marker="$3" log="$4" check="$5" start=$SECONDS
  while ! "$check"; do
    # kill -0, not alive: until the launching subshell has exec'd java its
    # command line lacks the marker (a fresh child's pid is not recycled).
    if ! kill -0 "$(cat "$pf")" 2>/dev/null; then
      say "$name: exited during start-up; last lines of $log:"
      tail -n 30 "$log" >&2 || true
      exit 1
    fi
    if (( SECONDS - start > TIMEOUT )); then
      say "$name: not serving after ${TIMEOUT}s (raise MSYNC_ENGINES_TIMEOUT on a slow machine); last lines of $log:"
      tail -n 30 "$log" >&2 || true
      stop_pid "$name" "$pf" "$marker" 10
      exit 1
    fi
    sleep 1
  done
  say "$name: serving after $(( SECONDS - start ))s"
}

# ---------- Cassandra ----------

cql_ready() {
  # A CQL v4 OPTIONS frame; a serving node answers SUPPORTED (0x84 ... opcode 0x06).
  local got
  got="$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "\x04\x00\x00\x01\x05\x00\x00\x00\x00" >&3
    head -c 5 <&3 | od -An -tx1' _ "$CQL_PORT" 2>/dev/null || true)"
  [[ "$(echo $got)" == "84 00 00 01 06" ]]
}

cassandra_conf() {
  mkdir -p "$C"/{conf,data,logs,tmp}
  cat >"$C/conf/cassandra.yaml" <<EOF
# Written by scripts/engines.sh: a throwaway single node for tests.
cluster_name: msync-engines
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$STORAGE_PORT"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $STORAGE_PORT
native_transport_port: $CQL_PORT
start_native_transport: true
data_file_directories: [ "$C/data/data" ]
commitlog_directory: "$C/data/commitlog"
hints_directory: "$C/data/hints"
saved_caches_directory: "$C/data/saved_caches"
cdc_raw_directory: "$C/data/cdc_raw"
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 32MiB
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
auto_snapshot: false
concurrent_compactors: 1
# Generous server-side timeouts: two loaded cores, sometimes two nodes on them.
read_request_timeout: 10000ms
range_request_timeout: 10000ms
write_request_timeout: 10000ms
counter_write_request_timeout: 10000ms
cas_contention_timeout: 10000ms
truncate_request_timeout: 60000ms
request_timeout: 20000ms
# What a fresh 5.0 cluster runs (also the default): TTLs end by 2038-01-19.
storage_compatibility_mode: CASSANDRA_4
# LWT protocol: v1 is 5.0's default (4 round trips per LWT), v2 needs 2.
paxos_variant: $PAXOS
EOF
  cat >"$C/conf/logback.xml" <<'EOF'
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>${cassandra.logdir}/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
  <logger name="org.apache.cassandra" level="INFO"/>
</configuration>
EOF
}

cassandra_up() {
  if alive "$C/pid" "$C/conf"; then
    cql_ready && { say "cassandra: already running (pid $(cat "$C/pid")) on 127.0.0.1:$CQL_PORT"; return; }
    die "cassandra: pid $(cat "$C/pid") runs but 127.0.0.1:$CQL_PORT does not answer CQL: run '$0 down cassandra' first"
  fi
  check_port "$CQL_PORT" "Cassandra CQL" MSYNC_CASSANDRA_PORT
  check_port "$STORAGE_PORT" "Cassandra storage" MSYNC_CASSANDRA_STORAGE_PORT
  resolve cassandra
  [[ "${MSYNC_ENGINES_FRESH:-}" != 1 ]] || rm -rf "$C/data"
  cassandra_conf
  local jamm; jamm="$(ls "$C"/lib/jamm-*.jar 2>/dev/null | head -n1)"
  [[ -n "$jamm" ]] || die "cassandra: no jamm jar in $C/lib: remove $C/lib and retry"
  # Flags: conf/jvm-server.options and conf/jvm17-server.options of Cassandra
  # 5.0, minus JMX and heap dumps; the -D ones shorten a throwaway node's start.
  (cd "$C" && exec "$JAVA" -Xms"$C_HEAP" -Xmx"$C_HEAP" -Xss256k \
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 -XX:G1HeapRegionSize=16m \
    -XX:G1RSetUpdatingPauseTimePercent=5 -XX:MaxGCPauseMillis=300 -XX:InitiatingHeapOccupancyPercent=70 \
    -XX:+ExitOnOutOfMemoryError -XX:+PerfDisableSharedMem -XX:+UseThreadPriorities \
    -ea -da:net.openhft... -Djava.net.preferIPv4Stack=true \
    -Djdk.attach.allowAttachSelf=true \
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED \
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED \
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED \
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED \
    --add-exports java.sql/java.sql=ALL-UNNAMED \
    --add-exports java.base/java.lang.ref=ALL-UNNAMED \
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED \
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED \
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED \
    --add-opens java.base/java.lang.module=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED \
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED \
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED \
    --add-opens java.base/java.io=ALL-UNNAMED \
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED \
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED \
    --add-opens java.base/java.lang=ALL-UNNAMED \
    --add-opens java.base/java.util=ALL-UNNAMED \
    -Dio.netty.tryReflectionSetAccessible=true \
    -Dio.netty.allocator.useCacheForAllThreads=true \
    -Dio.netty.allocator.maxOrder=11 \
    -javaagent:"$jamm" \
    -Dcassandra.config="file://$C/conf/cassandra.yaml" \
    -Dcassandra.storagedir="$C/data" -Dcassandra.logdir="$C/logs" \
    -Dlogback.configurationFile="file://$C/conf/logback.xml" \
    -Dcassandra-foreground=yes \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.unsafesystem=true \
    -Dcassandra.superuser_setup_delay_ms=0 \
    -Djava.io.tmpdir="$C/tmp" -Djna.tmpdir="$C/tmp" \
    -cp "$C/conf:$C/lib/*" org.apache.cassandra.service.CassandraDaemon \
    >"$C/logs/stdout.log" 2>&1 </dev/null) &
  echo $! >"$C/pid"
  say "cassandra $CASSANDRA_VERSION: started pid $! on 127.0.0.1:$CQL_PORT, log $C/logs/system.log"
}

cassandra_wait() { wait_for cassandra "$C/pid" "$C/conf" "$C/logs/system.log" cql_ready; }

# ---------- RocketMQ ----------

RMQ_OPENS=(--add-opens java.base/java.lang=ALL-UNNAMED --add-opens java.base/java.nio=ALL-UNNAMED
  --add-opens java.base/java.util=ALL-UNNAMED --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
  --add-exports java.base/sun.nio.ch=ALL-UNNAMED)

namesrv_ready() { grep -qs "The Name Server boot success" "$R/namesrv/stdout.log"; }

# broker_ready asks the name server for its cluster info (remoting request
# GET_BROKER_CLUSTER_INFO, code 106) and looks for this broker's address.
be32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(( ($1 >> 24) & 255 )) $(( ($1 >> 16) & 255 )) $(( ($1 >> 8) & 255 )) $(( $1 & 255 )); }
broker_ready() {
  local hdr='{"code":106,"flag":0,"language":"JAVA","opaque":1,"serializeTypeCurrentRPC":"JSON","version":479}'
  local frame; frame="$(be32 $(( ${#hdr} + 4 )))$(be32 ${#hdr})"
  local got # the name server keeps the connection open: read for 2s, then look
  got="$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "$2%s" "$3" >&3
    timeout 2 cat <&3 | tr -d "\0"' _ "$NS_PORT" "$frame" "$hdr" 2>/dev/null || true)"
  [[ "$got" == *"\"127.0.0.1:$BROKER_PORT\""* ]]
}

rocketmq_conf() {
  mkdir -p "$R"/{namesrv,broker,store,tmp}
  cat >"$R/namesrv.properties" <<EOF
listenPort=$NS_PORT
bindAddress=127.0.0.1
EOF
  cat >"$R/broker.conf" <<EOF
# Written by scripts/engines.sh: a throwaway single broker for tests.
brokerClusterName=DefaultCluster
brokerName=broker-a
brokerId=0
brokerRole=ASYNC_MASTER
flushDiskType=ASYNC_FLUSH
namesrvAddr=127.0.0.1:$NS_PORT
listenPort=$BROKER_PORT
haListenPort=$(( BROKER_PORT + 1 ))
# Never advertise another interface than loopback.
brokerIP1=127.0.0.1
brokerIP2=127.0.0.1
bindAddress=127.0.0.1
autoCreateTopicEnable=true
autoCreateSubscriptionGroup=true
storePathRootDir=$R/store
storePathCommitLog=$R/store/commitlog
mappedFileSizeCommitLog=104857600
maxIndexNum=100000
maxHashSlotNum=25000
timerWheelEnable=false
diskMaxUsedSpaceRatio=95
# A send waiting longer than this in the broker's queue is refused (TIMEOUT_CLEAN_QUEUE, "broker busy");
# the 200ms default refused pushes at load average ~28 on two cores.
waitTimeMillsInSendQueue=3000
EOF
}

rmq_start() { # name home mainclass logback heap [-Dprop ...] -- args...
  local name="$1" home="$2" main="$3" logback="$4" heap="$5" props=(); shift 5
  while [[ "$1" != -- ]]; do props+=("$1"); shift; done; shift
  # C1 only and the serial GC: far less CPU at start on a loaded machine; a
  # test broker's load never needs C2 or G1.
  (cd "$home" && exec "$JAVA" -server -Xms"$heap" -Xmx"$heap" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -XX:-OmitStackTraceInFastThrow \
    -XX:+ExitOnOutOfMemoryError "${RMQ_OPENS[@]}" \
    -Duser.home="$home" -Drocketmq.home.dir="$home" -Djava.io.tmpdir="$R/tmp" \
    -Drmq.logback.configurationFile="$logback" "${props[@]}" \
    -cp "$R/lib/*" "$main" "$@" >"$home/stdout.log" 2>&1 </dev/null) &
  echo $! >"$home/pid"
}

namesrv_up() {
  if alive "$R/namesrv/pid" "$R/namesrv"; then
    say "namesrv: already running (pid $(cat "$R/namesrv/pid")) on 127.0.0.1:$NS_PORT"; return
  fi
  check_port "$NS_PORT" "RocketMQ name server" MSYNC_NAMESRV_PORT
  resolve rocketmq
  rocketmq_conf
  rm -f "$R/namesrv/stdout.log"
  rmq_start namesrv "$R/namesrv" org.apache.rocketmq.namesrv.NamesrvStartup rmq.namesrv.logback.xml 256m -- \
    -c "$R/namesrv.properties"
  say "rocketmq namesrv $ROCKETMQ_VERSION: started pid $(cat "$R/namesrv/pid") on 127.0.0.1:$NS_PORT, logs $R/namesrv/logs/rocketmqlogs/"
}

broker_up() {
  if alive "$R/broker/pid" "$R/broker"; then
    say "broker: already running (pid $(cat "$R/broker/pid")) on 127.0.0.1:$BROKER_PORT"; return
  fi
  check_port "$BROKER_PORT" "RocketMQ broker" MSYNC_BROKER_PORT
  check_port "$(( BROKER_PORT - 2 ))" "RocketMQ broker fast channel, MSYNC_BROKER_PORT-2" MSYNC_BROKER_PORT
  check_port "$(( BROKER_PORT + 1 ))" "RocketMQ broker HA, MSYNC_BROKER_PORT+1" MSYNC_BROKER_PORT
  resolve rocketmq
  [[ "${MSYNC_ENGINES_FRESH:-}" != 1 ]] || rm -rf "$R/store"
  rocketmq_conf
  rmq_start broker "$R/broker" org.apache.rocketmq.broker.BrokerStartup rmq.broker.logback.xml "$B_HEAP" \
    -Drocketmq.broker.rebalance.lockMaxLiveTime="$B_LOCK_MS" -- -c "$R/broker.conf"
  say "rocketmq broker $ROCKETMQ_VERSION: started pid $(cat "$R/broker/pid") on 127.0.0.1:$BROKER_PORT, logs $R/broker/logs/rocketmqlogs/"
}

# ---------- commands ----------

components() { # expands the arguments into cassandra/namesrv/broker, in start order
  local want=" $* " out=()
  [[ "$want" == "  " ]] && want=" cassandra rocketmq "
  for w in $want; do
    case "$w" in cassandra|namesrv|broker|rocketmq) ;; *) die "unknown engine '$w': want cassandra, namesrv, broker or rocketmq" ;; esac
  done
  [[ "$want" == *" cassandra "* ]] && out+=(cassandra)
  [[ "$want" == *" namesrv "* || "$want" == *" rocketmq "* ]] && out+=(namesrv)
  [[ "$want" == *" broker "* || "$want" == *" rocketmq "* ]] && out+=(broker)
  echo "${out[@]}"
}

up() {
  need_java
  check_disk
  local comps; comps="$(components "$@")"
  # Resolve first so a Maven problem shows before anything starts.
  [[ " $comps " == *" cassandra "* ]] && resolve cassandra
  [[ " $comps " == *" namesrv "* || " $comps " == *" broker "* ]] && resolve rocketmq
  # Cassandra and the name server start together; the broker needs the name server.
  [[ " $comps " == *" cassandra "* ]] && cassandra_up
  if [[ " $comps " == *" namesrv "* ]]; then
    namesrv_up
    wait_for namesrv "$R/namesrv/pid" "$R/namesrv" "$R/namesrv/stdout.log" namesrv_ready
  fi
  if [[ " $comps " == *" broker "* ]]; then
    namesrv_ready || alive "$R/namesrv/pid" "$R/namesrv" || die "broker: the name server is not running: '$0 up namesrv' first"
    broker_up
    wait_for broker "$R/broker/pid" "$R/broker" "$R/broker/stdout.log" broker_ready
  fi
  [[ " $comps " == *" cassandra "* ]] && cassandra_wait
  env_lines
}

down() {
  local comps; comps="$(components "$@")"
  # Reverse order: broker, name server, Cassandra. Cassandra drains on SIGTERM.
  [[ " $comps " == *" broker "* ]] && stop_pid broker "$R/broker/pid" "$R/broker" 30
  [[ " $comps " == *" namesrv "* ]] && stop_pid namesrv "$R/namesrv/pid" "$R/namesrv" 15
  [[ " $comps " == *" cassandra "* ]] && stop_pid cassandra "$C/pid" "$C/conf" 60
  return 0
}

status() {
  local rc=0
  if alive "$C/pid" "$C/conf"; then
    if cql_ready; then say "cassandra: serving, pid $(cat "$C/pid"), 127.0.0.1:$CQL_PORT"; else say "cassandra: starting, pid $(cat "$C/pid")"; rc=1; fi
  else say "cassandra: stopped"; rc=1; fi
  if alive "$R/namesrv/pid" "$R/namesrv"; then say "namesrv: running, pid $(cat "$R/namesrv/pid"), 127.0.0.1:$NS_PORT"; else say "namesrv: stopped"; rc=1; fi
  if alive "$R/broker/pid" "$R/broker"; then
    if broker_ready; then say "broker: registered, pid $(cat "$R/broker/pid"), 127.0.0.1:$BROKER_PORT"; else say "broker: not registered yet, pid $(cat "$R/broker/pid")"; rc=1; fi
  else say "broker: stopped"; rc=1; fi
  say "logs: $C/logs/system.log, $R/namesrv/logs/rocketmqlogs/, $R/broker/logs/rocketmqlogs/"
  return $rc
}

env_lines() {
  echo "MSYNC_CASSANDRA_HOSTS=127.0.0.1:$CQL_PORT"
  echo "MSYNC_ROCKETMQ_NAMESRV=127.0.0.1:$NS_PORT"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  up) up "$@" ;;
  down) down "$@" ;;
  status) status ;;
  env) env_lines ;;
  *) echo "usage: $0 up|down [cassandra|namesrv|broker|rocketmq ...] | status | env" >&2; exit 2 ;;
esac
