#!/usr/bin/env bash
# Docker-free local stack for orderstream: Kafka (single KRaft node, jars from
# Maven Central) and PostgreSQL (Debian packages, our own cluster).
#
# Usage: scripts/stack.sh up|down|status|fetch|logs|pg-stop|pg-start|kafka-stop|kafka-start
#        scripts/stack.sh cluster-up|cluster-down|cluster-status   (an option: 3 Kafka nodes)
# Env:   STACK_DIR (default <repo>/.stack), KAFKA_PORT (29092, the port of KAFKA_BROKERS' default localhost:29092),
#        KAFKA_CONTROLLER_PORT (9093), PG_PORT (5432), KAFKA_LIBS (<STACK_DIR>/kafka/libs),
#        CLUSTER_KAFKA_PORTS (19092,19093,19094), CLUSTER_CONTROLLER_PORTS (19192,19193,19194)
#        PG_TLS (off; on: PostgreSQL over TLS, CA in <STACK_DIR>/pg-tls), PG_TLS_CERT_USER
#        KAFKA_SASL_PORT, KAFKA_SSL_PORT, KAFKA_SASL_SSL_PORT (unset: no such listener),
#        KAFKA_SASL_USERS (orderstream:orderstream-secret)   (an option: TLS and SASL listeners)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPTS=$REPO_ROOT/scripts
source "$SCRIPTS/dotenv.sh"
load_env_file  # ./.env of the working directory, under the environment
STACK_DIR=$(realpath -m "${STACK_DIR:-$REPO_ROOT/.stack}")
KAFKA_PORT=${KAFKA_PORT:-29092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
PG_PORT=${PG_PORT:-5432}

KAFKA_DIR=$STACK_DIR/kafka
# KAFKA_LIBS may point elsewhere: a second stack (tests) shares the fetched jars.
KAFKA_LIBS=$(realpath -m "${KAFKA_LIBS:-$KAFKA_DIR/libs}")
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_PROPS=$KAFKA_DIR/server.properties
KAFKA_LOG=$KAFKA_DIR/kafka.log
KAFKA_PID_FILE=$KAFKA_DIR/kafka.pid
KAFKA_TEMPLATE=$SCRIPTS/kafka/server.properties.template
KAFKA_HEAP=(-Xms256m -Xmx768m)
LOG4J_CONF=$SCRIPTS/kafka/log4j2.yaml
POM=$SCRIPTS/kafka/pom.xml

# $PG_LOCATION_FILE holds the cluster home: $STACK_DIR/pg, or a /var/tmp fallback
# when the postgres user cannot reach $STACK_DIR. The home holds data/, socket/, postgres.log.
PG_LOCATION_FILE=$STACK_DIR/pg/location
PG_URL="postgres://postgres:postgres@127.0.0.1:$PG_PORT/orders?sslmode=disable"
DEADLINE_SECONDS=60

say() { echo "[stack] $*"; }
die() { echo "[stack] ERROR: $*" >&2; exit 1; }
elapsed() { awk -v s="$1" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", e - s }'; }
need_root() { [[ $EUID -eq 0 ]] || die "must run as root (installs packages, runs postgres via runuser)"; }

# --- packages ---------------------------------------------------------------
APT_UPDATED=
apt_install() {
  [[ -n $APT_UPDATED ]] || { say "apt-get update"; apt-get update -qq; APT_UPDATED=1; }
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
need_cmd() { command -v "$1" >/dev/null || apt_install "$2"; }

# Prints the newest /usr/lib/postgresql/<ver>/bin (empty if PostgreSQL is not installed).
pg_find_bin() {
  local initdb
  initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1 || true)
  [[ -z $initdb ]] || dirname "$initdb"
}

pg_install() {
  [[ -z $(pg_find_bin) ]] || return 0
  # Stop Debian from creating (and starting) its own "main" cluster on 5432.
  apt_install postgresql-common
  sed -ri 's/^#?\s*create_main_cluster\s*=.*/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf
  apt_install postgresql
}

# --- processes and ports ----------------------------------------------------
pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# "java (pid 123)" for whatever listens on TCP port $1, empty if nothing does.
port_owner() {
  local line
  line=$(ss -ltnpH "sport = :$1" | head -n1)
  [[ -n $line ]] || return 0
  if [[ $line =~ users:\(\(\"([^\"]+)\",pid=([0-9]+) ]]; then
    echo "${BASH_REMATCH[1]} (pid ${BASH_REMATCH[2]})"
  else
    echo "an unknown process"
  fi
}

require_free_port() { # port, env var name, what
  local owner
  owner=$(port_owner "$1")
  [[ -z $owner ]] || die "port $1 is already in use by $owner, so $3 cannot start; stop it or set $2"
}

# Runs "$@" every 0.5s until it succeeds; fails after DEADLINE_SECONDS.
retry_until_deadline() {
  local deadline=$((SECONDS + DEADLINE_SECONDS))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

show_log_tail() { echo "----- last 40 lines of $1 -----" >&2; tail -n 40 "$1" >&2 || true; }

# --- kafka ------------------------------------------------------------------
# Recorded PID, only if that process is alive and really is our broker
# (guards against a stale pid file pointing at a reused PID after a reboot).
kafka_pid() {
  local pid
  pid=$(cat "$KAFKA_PID_FILE" 2>/dev/null) || return 0
  pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "kafka.Kafka $KAFKA_PROPS" && echo "$pid"
  return 0
}

kafka_answers() {
  (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null &&
    python3 "$SCRIPTS/kafka_ping.py" "127.0.0.1:$KAFKA_PORT" >/dev/null 2>&1
}

kafka_fetch() {
  need_cmd java openjdk-17-jre-headless
  need_cmd mvn maven
  # The marker stores the pom checksum, so editing the pom triggers a re-fetch.
  local want
  want=$(sha256sum "$POM" | cut -d' ' -f1)
  if [[ $(cat "$KAFKA_LIBS/.fetched" 2>/dev/null) == "$want" ]]; then
    say "kafka jars already present in $KAFKA_LIBS"
    return
  fi
  local start=$EPOCHREALTIME stage=$KAFKA_LIBS.new jar
  say "fetching kafka jars from Maven Central..."
  rm -rf "$stage"
  mvn -B -q -f "$POM" dependency:copy-dependencies -DoutputDirectory="$stage" \
    -DincludeScope=runtime >"$KAFKA_DIR/fetch.log" 2>&1 ||
    { show_log_tail "$KAFKA_DIR/fetch.log"; die "could not fetch kafka jars (is Maven Central reachable?)"; }
  # Merged into $KAFKA_LIBS rather than replacing it: a broker running from these jars (a pom
  # edit, e.g. the tools jar, fetched into an existing checkout) keeps the jars it has open and
  # finds its classes under the same names. A jar of the same name is the same release: kept;
  # a new one is renamed in (never copied over a jar in use); one no longer wanted is unlinked.
  mkdir -p "$KAFKA_LIBS"
  for jar in "$KAFKA_LIBS"/*.jar; do
    [[ ! -e $jar || -e $stage/${jar##*/} ]] || rm -f "$jar"
  done
  for jar in "$stage"/*.jar; do
    [[ -e $KAFKA_LIBS/${jar##*/} ]] || mv "$jar" "$KAFKA_LIBS/"
  done
  rm -rf "$stage"
  echo "$want" >"$KAFKA_LIBS/.fetched"
  say "kafka jars fetched in $(elapsed "$start")"
}

# Renders $KAFKA_TEMPLATE into $KAFKA_PROPS (the cluster's template also has a node id and voters).
kafka_render() {
  mkdir -p "$KAFKA_DATA"
  sed -e "s|\${KAFKA_PORT}|$KAFKA_PORT|g" \
    -e "s|\${KAFKA_CONTROLLER_PORT}|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|\${KAFKA_DATA_DIR}|$KAFKA_DATA|g" \
    -e "s|\${NODE_ID}|${NODE_ID:-1}|g" \
    -e "s|\${CONTROLLER_QUORUM_VOTERS}|${CONTROLLER_QUORUM_VOTERS:-}|g" \
    "$KAFKA_TEMPLATE" >"$KAFKA_PROPS"
}

# Formats the storage once: "$@" are StorageTool format's arguments besides -c.
kafka_format() {
  [[ -f $KAFKA_DATA/meta.properties ]] && return
  say "formatting kafka storage in $KAFKA_DATA (first run)"
  java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$LOG4J_CONF" kafka.tools.StorageTool \
    format "$@" -c "$KAFKA_PROPS" >>"$KAFKA_LOG" 2>&1 ||
    { show_log_tail "$KAFKA_LOG"; die "kafka storage format failed"; }
}

kafka_new_cluster_id() { java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid; }

kafka_configure() {
  kafka_render
  kafka_secure_render
  [[ -f $KAFKA_DATA/meta.properties ]] && return
  kafka_format --standalone -t "$(kafka_new_cluster_id)" "${SCRAM_ARGS[@]}"
  ((${#SCRAM_ARGS[@]} == 0)) || touch "$KAFKA_DIR/scram-users"
}

kafka_wait_ready() { # pid
  local deadline=$((SECONDS + DEADLINE_SECONDS))
  until kafka_answers; do
    if ! pid_alive "$1"; then show_log_tail "$KAFKA_LOG"; die "kafka exited during startup"; fi
    if ((SECONDS >= deadline)); then
      show_log_tail "$KAFKA_LOG"
      die "kafka did not answer on 127.0.0.1:$KAFKA_PORT within ${DEADLINE_SECONDS}s (pid $1 still running)"
    fi
    sleep 0.5
  done
}

kafka_up() {
  local pid start=$EPOCHREALTIME
  pid=$(kafka_pid)
  if [[ -n $pid ]]; then
    kafka_wait_ready "$pid" # normally instant; covers a broker that is still starting
    say "kafka already running (pid $pid)"
    return
  fi
  require_free_port "$KAFKA_PORT" KAFKA_PORT kafka
  require_free_port "$KAFKA_CONTROLLER_PORT" KAFKA_CONTROLLER_PORT "the kafka controller"
  kafka_fetch
  kafka_configure
  start=$EPOCHREALTIME
  pid=$(kafka_spawn)
  kafka_wait_ready "$pid"
  say "kafka ready in $(elapsed "$start") (pid $pid)"
}

# Starts the broker of $KAFKA_PROPS in the background, records and prints its PID.
kafka_spawn() {
  # setsid: own session, so the broker survives this shell and its terminal.
  # A non-interactive shell's background job is no group leader, so setsid
  # execs java directly and $! is the broker's PID.
  setsid java "${KAFKA_HEAP[@]}" -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$LOG4J_CONF" \
    kafka.Kafka "$KAFKA_PROPS" </dev/null >>"$KAFKA_LOG" 2>&1 &
  echo "$!" >"$KAFKA_PID_FILE"
  echo "$!"
}

kafka_down() {
  local pid
  pid=$(kafka_pid)
  if [[ -z $pid ]]; then say "kafka not running"; rm -f "$KAFKA_PID_FILE"; return; fi
  say "stopping kafka (pid $pid)"
  kill -TERM "$pid"
  local deadline=$((SECONDS + 30))
  while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.5; done
  if pid_alive "$pid"; then say "kafka did not stop within 30s, sending SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$KAFKA_PID_FILE"
}

# --- kafka security (an option) ---------------------------------------------------
# KAFKA_SASL_PORT, KAFKA_SSL_PORT, KAFKA_SASL_SSL_PORT add SASL_PLAINTEXT, SSL (mutual TLS)
# and SASL_SSL listeners beside PLAINTEXT on the single node. SASL knows KAFKA_SASL_USERS
# ("name:password,..."), as SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN users; SCRAM users are
# created when the storage is formatted, so they need a fresh data dir. TLS material is made
# once in <STACK_DIR>/kafka/tls: ca.pem (what clients trust), the broker's keystore and a
# client certificate (client.pem, client.key) for the SSL listener.
KAFKA_SECURE_TEMPLATE=$SCRIPTS/kafka/security.properties.template
KAFKA_SASL_USERS=${KAFKA_SASL_USERS:-orderstream:orderstream-secret}
SCRAM_ARGS=()

kafka_secure_enabled() { [[ -n ${KAFKA_SASL_PORT:-}${KAFKA_SSL_PORT:-}${KAFKA_SASL_SSL_PORT:-} ]]; }

# Signs $1.pem (with key $1.key) by the CA for extended key usage $2 (serverAuth|clientAuth).
kafka_tls_sign() { # name, usage, subject
  local dir=$KAFKA_DIR/tls
  openssl req -newkey rsa:2048 -nodes -subj "$3" -keyout "$dir/$1.key" -out "$dir/$1.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=$2" "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" \
    "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$dir/$1.ext"
  openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$dir/$1.ext" -out "$dir/$1.pem" 2>/dev/null
  rm -f "$dir/$1.csr" "$dir/$1.ext"
}

kafka_tls_material() {
  local dir=$KAFKA_DIR/tls
  [[ -f $dir/truststore.p12 ]] && return
  need_cmd openssl openssl
  command -v keytool >/dev/null || die "keytool (from the JDK) is needed for the kafka truststore"
  say "making a self-signed CA and the kafka broker's keystore in $dir"
  mkdir -p "$dir"
  chmod 700 "$dir"
  openssl rand -hex 16 >"$dir/store.password"
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -sha256 -subj "/CN=orderstream local CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  kafka_tls_sign broker serverAuth /CN=localhost
  kafka_tls_sign client clientAuth /CN=orderstream
  openssl pkcs12 -export -in "$dir/broker.pem" -inkey "$dir/broker.key" -certfile "$dir/ca.pem" \
    -name broker -passout "file:$dir/store.password" -out "$dir/broker.p12"
  keytool -importcert -noprompt -alias ca -file "$dir/ca.pem" -keystore "$dir/truststore.p12" \
    -storetype PKCS12 -storepass "$(cat "$dir/store.password")" >/dev/null 2>&1
}

# Adds the listeners asked for to $KAFKA_PROPS (just rendered) and fills SCRAM_ARGS for the format.
kafka_secure_render() {
  kafka_secure_enabled || return 0
  local listeners=() map=() users=() name port user password plain_users=""
  for name in SASL_PLAINTEXT SSL SASL_SSL; do
    case $name in
      SASL_PLAINTEXT) port=${KAFKA_SASL_PORT:-} ;;
      SSL) port=${KAFKA_SSL_PORT:-} ;;
      SASL_SSL) port=${KAFKA_SASL_SSL_PORT:-} ;;
    esac
    [[ -n $port ]] || continue
    require_free_port "$port" "KAFKA_${name/#SASL_PLAINTEXT/SASL}_PORT" "the kafka $name listener"
    listeners+=("$name://127.0.0.1:$port")
    map+=("$name:$name")
  done
  kafka_tls_material
  SCRAM_ARGS=()
  IFS=, read -r -a users <<<"$KAFKA_SASL_USERS"
  for user in "${users[@]}"; do
    password=${user#*:}
    user=${user%%:*}
    SCRAM_ARGS+=(--add-scram "SCRAM-SHA-256=[name=$user,password=$password]"
      --add-scram "SCRAM-SHA-512=[name=$user,password=$password]")
    plain_users+="user_$user=\"$password\" "
  done
  local joined
  joined=$(IFS=,; echo "${listeners[*]}")
  sed -i -e "s|^\(listeners=.*\)$|\1,$joined|" -e "s|^\(advertised.listeners=.*\)$|\1,$joined|" \
    -e "s|^\(listener.security.protocol.map=.*\)$|\1,$(IFS=,; echo "${map[*]}")|" "$KAFKA_PROPS"
  sed -e "s|\${KAFKA_TLS_DIR}|$KAFKA_DIR/tls|g" \
    -e "s|\${KAFKA_STORE_PASSWORD}|$(cat "$KAFKA_DIR/tls/store.password")|g" \
    -e "s|\${PLAIN_USERS}|${plain_users% }|g" "$KAFKA_SECURE_TEMPLATE" >>"$KAFKA_PROPS"
  if [[ -f $KAFKA_DATA/meta.properties && ! -f $KAFKA_DIR/scram-users ]]; then
    say "WARNING: this kafka storage was formatted without SCRAM users; wipe $KAFKA_DATA to create them"
  fi
  say "kafka listeners added: $joined (CA: $KAFKA_DIR/tls/ca.pem)"
}

# --- kafka cluster (an option: `cluster-up`) -----------------------------------
# Three combined broker+controller KRaft nodes on loopback, beside (not instead of) the single
# node: every topic gets 3 replicas and acks=all writes need 2 of them (min.insync.replicas).
# Each node lives in $CLUSTER_DIR/node-<id>/ and is driven by the kafka_* functions above
# through the same globals, switched by cluster_use_node.
CLUSTER_DIR=$STACK_DIR/cluster
IFS=, read -r -a CLUSTER_KAFKA_PORTS <<<"${CLUSTER_KAFKA_PORTS:-19092,19093,19094}"
IFS=, read -r -a CLUSTER_CONTROLLER_PORTS <<<"${CLUSTER_CONTROLLER_PORTS:-19192,19193,19194}"
CLUSTER_SIZE=3

cluster_check_ports() {
  ((${#CLUSTER_KAFKA_PORTS[@]} == CLUSTER_SIZE && ${#CLUSTER_CONTROLLER_PORTS[@]} == CLUSTER_SIZE)) ||
    die "CLUSTER_KAFKA_PORTS and CLUSTER_CONTROLLER_PORTS must each list $CLUSTER_SIZE ports"
}

cluster_use_node() { # node id, 1..CLUSTER_SIZE
  NODE_ID=$1
  KAFKA_PORT=${CLUSTER_KAFKA_PORTS[$1 - 1]}
  KAFKA_CONTROLLER_PORT=${CLUSTER_CONTROLLER_PORTS[$1 - 1]}
  KAFKA_DIR=$CLUSTER_DIR/node-$1
  KAFKA_DATA=$KAFKA_DIR/data
  KAFKA_PROPS=$KAFKA_DIR/server.properties
  KAFKA_LOG=$KAFKA_DIR/kafka.log
  KAFKA_PID_FILE=$KAFKA_DIR/kafka.pid
  KAFKA_TEMPLATE=$SCRIPTS/kafka/cluster.properties.template
  KAFKA_HEAP=(-Xms128m -Xmx512m)
}

cluster_brokers() {
  local port list=()
  for port in "${CLUSTER_KAFKA_PORTS[@]}"; do list+=("127.0.0.1:$port"); done
  (IFS=,; echo "${list[*]}")
}

cluster_up() {
  cluster_check_ports
  local i pid start=$EPOCHREALTIME voters=() pids=()
  for i in $(seq "$CLUSTER_SIZE"); do
    voters+=("$i@127.0.0.1:${CLUSTER_CONTROLLER_PORTS[$i - 1]}")
  done
  CONTROLLER_QUORUM_VOTERS=$(IFS=,; echo "${voters[*]}")
  mkdir -p "$CLUSTER_DIR"
  KAFKA_DIR=$CLUSTER_DIR kafka_fetch
  # One cluster id for all nodes, chosen once.
  [[ -s $CLUSTER_DIR/cluster.id ]] || kafka_new_cluster_id >"$CLUSTER_DIR/cluster.id"
  local stopped=() formats=()
  for i in $(seq "$CLUSTER_SIZE"); do
    cluster_use_node "$i"
    [[ -z $(kafka_pid) ]] || continue
    require_free_port "$KAFKA_PORT" CLUSTER_KAFKA_PORTS "kafka node $i"
    require_free_port "$KAFKA_CONTROLLER_PORT" CLUSTER_CONTROLLER_PORTS "the controller of kafka node $i"
    kafka_render
    # A static quorum (controller.quorum.voters) is formatted without --standalone; the
    # nodes are formatted side by side, as each format is a JVM start of its own.
    kafka_format -t "$(cat "$CLUSTER_DIR/cluster.id")" &
    formats+=("$!")
    stopped+=("$i")
  done
  for pid in "${formats[@]}"; do wait "$pid" || die "formatting a kafka node failed"; done
  # Start every node first: a node answers only once a majority of controllers runs.
  for i in "${stopped[@]}"; do
    cluster_use_node "$i"
    pid=$(kafka_spawn)
    say "kafka node $i starting (pid $pid, 127.0.0.1:$KAFKA_PORT)"
  done
  for i in $(seq "$CLUSTER_SIZE"); do
    cluster_use_node "$i"
    pids+=("$(kafka_pid)")
  done
  for i in $(seq "$CLUSTER_SIZE"); do
    cluster_use_node "$i"
    kafka_wait_ready "${pids[$i - 1]}"
  done
  say "kafka cluster of $CLUSTER_SIZE nodes ready in $(elapsed "$start")"
  echo "KAFKA_BROKERS=$(cluster_brokers)"
}

# Stops all nodes at once: one by one, the last would wait for a controller majority that is gone.
cluster_down() {
  cluster_check_ports
  local i pid pids=() deadline=$((SECONDS + 30))
  for i in $(seq "$CLUSTER_SIZE"); do
    cluster_use_node "$i"
    pid=$(kafka_pid)
    rm -f "$KAFKA_PID_FILE"
    [[ -n $pid ]] || continue
    say "stopping kafka node $i (pid $pid)"
    kill -TERM "$pid"
    pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.5; done
    if pid_alive "$pid"; then say "kafka pid $pid did not stop within 30s, sending SIGKILL"; kill -KILL "$pid"; fi
  done
}

cluster_status() {
  cluster_check_ports
  local i pid ok=0
  for i in $(seq "$CLUSTER_SIZE"); do
    cluster_use_node "$i"
    pid=$(kafka_pid)
    if [[ -n $pid ]] && kafka_answers; then
      echo "kafka node $i  running  pid $pid  127.0.0.1:$KAFKA_PORT"
    elif [[ -n $pid ]]; then
      echo "kafka node $i  starting pid $pid  127.0.0.1:$KAFKA_PORT (not answering yet)"; ok=1
    else
      echo "kafka node $i  stopped"; ok=1
    fi
  done
  return $ok
}

# --- postgresql -------------------------------------------------------------
# initdb/pg_ctl refuse to run as root; cd / because our cwd may be unreadable for postgres.
as_postgres() { (cd / && runuser -u postgres -- "$@"); }
pg_home() { cat "$PG_LOCATION_FILE" 2>/dev/null || true; }
pg_running() { [[ -n $PG_BIN && -n $1 ]] && as_postgres "$PG_BIN/pg_ctl" -D "$1/data" status >/dev/null 2>&1; }
pg_pid() { head -n1 "$1/data/postmaster.pid" 2>/dev/null || true; }
psql_q() { "$PG_BIN/psql" "postgresql://postgres:postgres@127.0.0.1:$PG_PORT/$1?connect_timeout=3" -qtAc "$2"; }
pg_answers() { psql_q orders 'select 1' >/dev/null 2>&1; }

# Picks (once) where the cluster lives and records it in $PG_LOCATION_FILE.
pg_choose_home() {
  [[ -z $(pg_home) ]] || return 0
  local home=$STACK_DIR/pg
  mkdir -p "$home"
  # `test -x` as postgres fails if any parent directory is not traversable.
  if ! runuser -u postgres -- test -x "$home"; then
    home=/var/tmp/orderstream-pg-$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-10)
    say "postgres user cannot reach $STACK_DIR; using $home for the cluster"
    mkdir -p "$home"
  fi
  chown postgres:postgres "$home"
  chmod 700 "$home"
  echo "$home" >"$PG_LOCATION_FILE"
}

pg_init() { # home
  local home=$1 locale=C
  as_postgres mkdir -p "$home/socket"
  [[ -f $home/data/PG_VERSION ]] && return
  locale -a | grep -qix 'c.utf-\?8' && locale=C.UTF-8
  say "initializing postgres cluster in $home/data (locale $locale)"
  printf 'postgres\n' >"$home/pwfile"
  chown postgres "$home/pwfile"
  chmod 600 "$home/pwfile"
  as_postgres "$PG_BIN/initdb" -D "$home/data" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 --pwfile="$home/pwfile" -E UTF8 --locale="$locale" >"$home/initdb.log" 2>&1 ||
    { show_log_tail "$home/initdb.log"; die "initdb failed"; }
  rm -f "$home/pwfile"
  echo "include 'stack.conf'" >>"$home/data/postgresql.conf"
}

pg_up() {
  pg_install
  PG_BIN=$(pg_find_bin)
  pg_choose_home
  local home start pid
  home=$(pg_home)
  if pg_running "$home"; then
    pid=$(pg_pid "$home")
    pg_answers || die "postgres (pid $pid) runs but does not answer on 127.0.0.1:$PG_PORT; see $home/postgres.log"
    say "postgres already running (pid $pid)"
    return
  fi
  require_free_port "$PG_PORT" PG_PORT postgres
  pg_init "$home"
  # Rewritten on every start so PG_PORT changes take effect.
  cat >"$home/data/stack.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$home/socket'
max_connections = 200
shared_buffers = 256MB
fsync = on
EOF
  pg_tls_configure "$home"
  chown postgres:postgres "$home/data/stack.conf"
  start=$EPOCHREALTIME
  as_postgres "$PG_BIN/pg_ctl" -D "$home/data" -l "$home/postgres.log" -w -t "$DEADLINE_SECONDS" start >/dev/null ||
    { show_log_tail "$home/postgres.log"; die "postgres failed to start"; }
  retry_until_deadline psql_q postgres 'select 1' ||
    { show_log_tail "$home/postgres.log"; die "postgres does not accept connections on 127.0.0.1:$PG_PORT"; }
  if [[ -z $(psql_q postgres "select 1 from pg_database where datname = 'orders'") ]]; then
    say "creating database orders"
    psql_q postgres 'create database orders'
  fi
  retry_until_deadline pg_answers || { show_log_tail "$home/postgres.log"; die "database orders does not answer"; }
  pg_tls_cert_role
  say "postgres ready in $(elapsed "$start") (pid $(pg_pid "$home"))"
}

pg_down() {
  PG_BIN=$(pg_find_bin)
  local home
  home=$(pg_home)
  if ! pg_running "$home"; then say "postgres not running"; return; fi
  say "stopping postgres (pid $(pg_pid "$home"))"
  as_postgres "$PG_BIN/pg_ctl" -D "$home/data" -m fast -w stop >/dev/null
}

# --- postgresql over TLS (an option: PG_TLS=on) ---------------------------------
# PG_TLS=on starts the cluster with ssl = on and a server certificate for localhost and
# 127.0.0.1, signed by a CA made here once (openssl): <STACK_DIR>/pg-tls/ca.crt is what a
# client trusts (PG_URL ...?sslmode=verify-full&sslrootcert=<it>). PG_TLS_CERT_USER=<role>
# also makes that role (if missing) and a client certificate for it (client.crt, client.key,
# CN = the role), and puts `hostssl all <role> 127.0.0.1/32 cert` first in pg_hba.conf: that
# role logs in with its certificate only. Every other role keeps its password, with or
# without TLS. Applied on each start: a start without PG_TLS turns TLS off again.
PG_TLS=${PG_TLS:-off}
PG_TLS_CERT_USER=${PG_TLS_CERT_USER:-}
PG_TLS_DIR=$STACK_DIR/pg-tls
PG_HBA_BEGIN='# stack.sh PG_TLS_CERT_USER begin'
PG_HBA_END='# stack.sh PG_TLS_CERT_USER end'

pg_tls_on() { [[ $PG_TLS == on || $PG_TLS == 1 || $PG_TLS == true ]]; }

# Writes $1.key and $1.crt signed by the CA: name, subject, extensions file.
pg_tls_issue() {
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PG_TLS_DIR/$1.key" -subj "$2" \
    -out "$PG_TLS_DIR/$1.csr" 2>/dev/null
  openssl x509 -req -in "$PG_TLS_DIR/$1.csr" -CA "$PG_TLS_DIR/ca.crt" -CAkey "$PG_TLS_DIR/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$3" -out "$PG_TLS_DIR/$1.crt" 2>/dev/null
  rm -f "$PG_TLS_DIR/$1.csr"
  chmod 600 "$PG_TLS_DIR/$1.key"
}

pg_tls_files() {
  need_cmd openssl openssl
  mkdir -p "$PG_TLS_DIR"
  if [[ ! -s $PG_TLS_DIR/server.crt ]]; then
    say "making a test CA and a server certificate in $PG_TLS_DIR"
    openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -sha256 -subj "/CN=orderstream test CA" \
      -keyout "$PG_TLS_DIR/ca.key" -out "$PG_TLS_DIR/ca.crt" 2>/dev/null
    chmod 600 "$PG_TLS_DIR/ca.key"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$PG_TLS_DIR/server.ext"
    pg_tls_issue server "/CN=localhost" "$PG_TLS_DIR/server.ext"
  fi
  if [[ -n $PG_TLS_CERT_USER && $(cat "$PG_TLS_DIR/client.user" 2>/dev/null) != "$PG_TLS_CERT_USER" ]]; then
    say "making a client certificate for role $PG_TLS_CERT_USER"
    printf 'extendedKeyUsage=clientAuth\n' >"$PG_TLS_DIR/client.ext"
    pg_tls_issue client "/CN=$PG_TLS_CERT_USER" "$PG_TLS_DIR/client.ext"
    echo "$PG_TLS_CERT_USER" >"$PG_TLS_DIR/client.user"
  fi
}

# Called by pg_up once stack.conf is written: TLS settings, certificates, pg_hba's cert rule.
pg_tls_configure() { # home
  local data=$1/data hba=$1/data/pg_hba.conf
  # The cert rule is ours alone: drop the previous one, add it again when asked for.
  sed -i "/^$PG_HBA_BEGIN\$/,/^$PG_HBA_END\$/d" "$hba"
  pg_tls_on || return 0
  [[ -z $PG_TLS_CERT_USER || $PG_TLS_CERT_USER =~ ^[a-z_][a-z0-9_]*$ ]] ||
    die "PG_TLS_CERT_USER must be a plain lower-case role name"
  pg_tls_files
  install -o postgres -g postgres -m 600 "$PG_TLS_DIR/server.crt" "$data/server.crt"
  install -o postgres -g postgres -m 600 "$PG_TLS_DIR/server.key" "$data/server.key"
  install -o postgres -g postgres -m 600 "$PG_TLS_DIR/ca.crt" "$data/root.crt"
  cat >>"$data/stack.conf" <<EOF
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_ca_file = 'root.crt'
EOF
  if [[ -n $PG_TLS_CERT_USER ]]; then
    { echo "$PG_HBA_BEGIN"
      echo "hostssl all $PG_TLS_CERT_USER 127.0.0.1/32 cert"
      echo "$PG_HBA_END"
      cat "$hba"; } >"$hba.new"
    chown postgres:postgres "$hba.new"
    chmod 600 "$hba.new"
    mv "$hba.new" "$hba"
  fi
  say "postgres TLS on: clients trust $PG_TLS_DIR/ca.crt${PG_TLS_CERT_USER:+; role $PG_TLS_CERT_USER logs in with $PG_TLS_DIR/client.crt}"
}

# The certificate-only role, made once the server answers.
pg_tls_cert_role() {
  pg_tls_on && [[ -n $PG_TLS_CERT_USER ]] || return 0
  [[ -n $(psql_q postgres "select 1 from pg_roles where rolname = '$PG_TLS_CERT_USER'") ]] ||
    psql_q postgres "create role $PG_TLS_CERT_USER login"
}

# --- commands -----------------------------------------------------------------
cmd_up() {
  need_root
  need_cmd ss iproute2
  need_cmd python3 python3
  mkdir -p "$KAFKA_DIR" "$STACK_DIR/pg"
  pg_up
  kafka_up
  echo "KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
  echo "PG_URL=$PG_URL"
}

cmd_down() { need_root; kafka_down; pg_down; }

cmd_status() {
  need_root
  PG_BIN=$(pg_find_bin)
  local ok=0 pid home
  pid=$(kafka_pid)
  if [[ -n $pid ]] && kafka_answers; then
    echo "kafka     running  pid $pid  127.0.0.1:$KAFKA_PORT"
  elif [[ -n $pid ]]; then
    echo "kafka     starting pid $pid  127.0.0.1:$KAFKA_PORT (not answering yet)"; ok=1
  else
    echo "kafka     stopped"; ok=1
  fi
  home=$(pg_home)
  if pg_running "$home" && pg_answers; then
    echo "postgres  running  pid $(pg_pid "$home")  127.0.0.1:$PG_PORT  ($home)"
  elif pg_running "$home"; then
    echo "postgres  running  pid $(pg_pid "$home")  but not answering on 127.0.0.1:$PG_PORT"; ok=1
  else
    echo "postgres  stopped"; ok=1
  fi
  return $ok
}

cmd_logs() {
  local home logs=()
  home=$(pg_home)
  [[ -f $KAFKA_LOG ]] && logs+=("$KAFKA_LOG")
  [[ -n $home && -f $home/postgres.log ]] && logs+=("$home/postgres.log")
  ((${#logs[@]})) || die "no logs yet under $STACK_DIR (run: $0 up)"
  tail -n 40 -F "${logs[@]}"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  fetch) mkdir -p "$KAFKA_DIR" && kafka_fetch ;;
  logs) cmd_logs ;;
  pg-stop) need_root; pg_down ;;   # the outage tests stop and start PostgreSQL alone
  pg-start) need_root; pg_up ;;
  kafka-stop) need_root; kafka_down ;;   # the broker-outage tests, on a stack of their own
  kafka-start) need_root; mkdir -p "$KAFKA_DIR"; kafka_up ;;
  cluster-up) need_root; need_cmd ss iproute2; need_cmd python3 python3; cluster_up ;;
  cluster-down) need_root; cluster_down ;;
  cluster-status) need_root; cluster_status ;;
  *) echo "usage: $0 up|down|status|fetch|logs|pg-stop|pg-start|kafka-stop|kafka-start|cluster-up|cluster-down|cluster-status" >&2
     exit 2 ;;
esac
