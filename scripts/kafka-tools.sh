#!/usr/bin/env bash
# Apache Kafka's own command-line tools on the fetched jars (no Kafka distribution, no Docker):
# what `make topics`, `make groups` and `make tail` run (README "Kafka tools").
#
# Usage: scripts/kafka-tools.sh topics [TOPIC_REGEX]     partitions, start and end offsets
#        scripts/kafka-tools.sh groups [GROUP]           members, and lag per partition
#        scripts/kafka-tools.sh tail [TOPIC] [N]         the newest N messages: key, headers, value
#        scripts/kafka-tools.sh kafka-topics|kafka-consumer-groups|kafka-console-consumer|
#                               kafka-get-offsets ARGS...   the tool itself, connection options added
# Env:   KAFKA_BROKERS (localhost:29092), KAFKA_GROUP_ID (order-svc), KAFKA_TOPIC (orders), and the
#        service's KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME,
#        KAFKA_SASL_PASSWORD, KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE, KAFKA_SSL_KEYFILE (.env.example),
#        turned into a client properties file (--command-config). STACK_DIR, KAFKA_LIBS as stack.sh.
#        Each also from ./.env (ENV_FILE: another file; empty: none) where the environment has none.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO_ROOT/scripts/dotenv.sh"
load_env_file # ./.env under the environment, as the worker reads it: the same brokers and group
STACK_DIR=$(realpath -m "${STACK_DIR:-$REPO_ROOT/.stack}")
KAFKA_LIBS=$(realpath -m "${KAFKA_LIBS:-$STACK_DIR/kafka/libs}")
BROKERS=${KAFKA_BROKERS:-localhost:29092}
# Short-lived JVMs: the client compiler only and a small serial heap start them fastest.
JAVA_OPTS=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
  -Dlog4j2.configurationFile="$REPO_ROOT/scripts/kafka/tools-log4j2.yaml")

die() { echo "kafka-tools: $*" >&2; exit 1; }

# --- prerequisites ------------------------------------------------------------------------
command -v java >/dev/null ||
  die "java is not installed; run \`make setup\` (installs a JRE and fetches Kafka's jars)"
compgen -G "$KAFKA_LIBS/kafka-tools-*.jar" >/dev/null ||
  die "Kafka's tools jar is not in $KAFKA_LIBS; run \`make setup\` (or scripts/stack.sh fetch) to fetch it"

# A broker that does not answer would keep each tool retrying for a minute: say so at once.
broker_reachable() {
  local broker host port
  for broker in ${BROKERS//,/ }; do
    host=${broker%:*} port=${broker##*:}
    host=${host#[} host=${host%]}
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null && return 0
  done
  return 1
}

WORK=$(mktemp -d)
chmod 700 "$WORK" # the client properties may hold the SASL password
trap 'rm -rf "$WORK"' EXIT
CONFIG=$WORK/client.properties

# --- connection settings: the service's env names -> Java client properties ------------------
# A Java properties value: backslashes doubled (line breaks cannot occur in env values we accept).
prop_value() { printf '%s' "${1//\\/\\\\}"; }
# A JAAS option value: a quoted string with \ and " escaped.
jaas_quoted() { local s=${1//\\/\\\\}; printf '"%s"' "${s//\"/\\\"}"; }

write_client_config() {
  local protocol mechanism module
  protocol=$(tr '[:lower:]' '[:upper:]' <<<"${KAFKA_SECURITY_PROTOCOL:-PLAINTEXT}")
  mechanism=$(tr '[:lower:]' '[:upper:]' <<<"${KAFKA_SASL_MECHANISM:-PLAIN}")
  case $protocol in
    PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL) ;;
    *) die "KAFKA_SECURITY_PROTOCOL=$protocol: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL" ;;
  esac
  {
    echo "security.protocol=$protocol"
    if [[ $protocol == SASL_* ]]; then
      case $mechanism in
        PLAIN) module=org.apache.kafka.common.security.plain.PlainLoginModule ;;
        SCRAM-SHA-256 | SCRAM-SHA-512) module=org.apache.kafka.common.security.scram.ScramLoginModule ;;
        *) die "KAFKA_SASL_MECHANISM=$mechanism: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512" ;;
      esac
      [[ -n ${KAFKA_SASL_USERNAME:-} ]] || die "KAFKA_SASL_USERNAME is required with $protocol"
      [[ -n ${KAFKA_SASL_PASSWORD:-} ]] || die "KAFKA_SASL_PASSWORD is required with $protocol"
      echo "sasl.mechanism=$mechanism"
      prop_value "sasl.jaas.config=$module required username=$(jaas_quoted "$KAFKA_SASL_USERNAME") password=$(jaas_quoted "$KAFKA_SASL_PASSWORD");"
      echo
    fi
    if [[ $protocol == SSL || $protocol == SASL_SSL ]]; then
      # PEM files as the service takes them; no CA file: the JRE's own CAs (managed services).
      if [[ -n ${KAFKA_SSL_CAFILE:-} ]]; then
        [[ -r $KAFKA_SSL_CAFILE ]] || die "KAFKA_SSL_CAFILE=$KAFKA_SSL_CAFILE is not a readable file"
        echo "ssl.truststore.type=PEM"
        echo "ssl.truststore.location=$(prop_value "$KAFKA_SSL_CAFILE")"
      fi
      if [[ -n ${KAFKA_SSL_CERTFILE:-} ]]; then
        client_keystore
        echo "ssl.keystore.type=PEM"
        echo "ssl.keystore.location=$(prop_value "$WORK/client-keystore.pem")"
      fi
    fi
  } >"$CONFIG"
}

# Java reads a PEM key store from one file holding the key (PKCS#8) and its certificate chain.
client_keystore() {
  local cert=$KAFKA_SSL_CERTFILE key=${KAFKA_SSL_KEYFILE:-}
  [[ -r $cert ]] || die "KAFKA_SSL_CERTFILE=$cert is not a readable file"
  [[ -n $key ]] || die "KAFKA_SSL_KEYFILE is required with KAFKA_SSL_CERTFILE"
  [[ -r $key ]] || die "KAFKA_SSL_KEYFILE=$key is not a readable file"
  if grep -q -- '-----BEGIN PRIVATE KEY-----' "$key"; then
    cat "$key" >"$WORK/client-keystore.pem"
  else # PKCS#1 (BEGIN RSA PRIVATE KEY) or SEC1 (BEGIN EC PRIVATE KEY): Java wants PKCS#8
    command -v openssl >/dev/null || die "openssl is needed to convert KAFKA_SSL_KEYFILE to PKCS#8"
    openssl pkcs8 -topk8 -nocrypt -in "$key" -out "$WORK/client-keystore.pem" 2>/dev/null ||
      die "KAFKA_SSL_KEYFILE=$key: not an unencrypted PEM private key"
  fi
  cat "$cert" >>"$WORK/client-keystore.pem"
}

# --- running the tools ------------------------------------------------------------------------
tool_class() {
  case $1 in
    kafka-topics) echo org.apache.kafka.tools.TopicCommand ;;
    kafka-consumer-groups) echo org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    kafka-console-consumer) echo org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    kafka-get-offsets) echo org.apache.kafka.tools.GetOffsetShell ;;
    *) return 1 ;;
  esac
}

# Runs a tool ("$1", a name above) with the brokers and the client config.
tool() {
  local class
  class=$(tool_class "$1") || die "unknown tool $1"
  shift
  java "${JAVA_OPTS[@]}" -cp "$KAFKA_LIBS/*" "$class" --bootstrap-server "$BROKERS" \
    --command-config "$CONFIG" "$@"
}

# Writes "topic:partition:offset" lines to $2 (sorted by topic, then partition number) and
# the tool's complaints to $2.err. $1: -1 end offsets, -2 start offsets; the rest: filters.
offsets() {
  local time=$1 out=$2
  shift 2
  local rc=0
  tool kafka-get-offsets --time "$time" "$@" 2>"$out.err" | sort -t: -k1,1 -k2,2n >"$out" || rc=$?
  echo "$rc" >"$out.rc"
}

# Start and end offsets into $WORK/start and $WORK/end, in parallel: each is a JVM start (~1.5 s).
# Fails with "what" named when no topic matches the filters.
start_and_end_offsets() { # what, filters...
  local what=$1 start_job file
  shift
  offsets -2 "$WORK/start" "$@" &
  start_job=$!
  offsets -1 "$WORK/end" "$@"
  wait "$start_job"
  for file in "$WORK/end" "$WORK/start"; do
    if [[ $(cat "$file.rc") == 0 ]]; then
      cat "$file.err" >&2 # warnings, e.g. a broker of the list that does not resolve
    elif grep -q 'Could not match any topic-partitions' "$file.err"; then
      die "$what on $BROKERS"
    else
      grep -m1 '^Error' "$file.err" >&2 || cat "$file.err" >&2
      die "could not read the offsets from $BROKERS"
    fi
  done
}

cmd_topics() {
  local filter=() pattern=${1:-}
  if [[ -n $pattern ]]; then filter=(--topic "$pattern"); else filter=(--exclude-internal-topics); fi
  start_and_end_offsets "no topic matches ${pattern:-anything}" "${filter[@]}"
  awk -F: 'NR == FNR { start[$1 ":" $2] = $3; next }
    FNR == 1 { printf "%-50s %9s %12s %12s\n", "TOPIC", "PARTITION", "START_OFFSET", "END_OFFSET" }
    { s = ($1 ":" $2) in start ? start[$1 ":" $2] : "-"
      printf "%-50s %9s %12s %12s\n", $1, $2, s, $3 }' "$WORK/start" "$WORK/end"
}

cmd_groups() {
  local group=${1:-${KAFKA_GROUP_ID:-order-svc}} file
  # Both views at once, printed one after the other.
  tool kafka-consumer-groups --describe --group "$group" --members --verbose >"$WORK/members" 2>&1 &
  local members_job=$!
  tool kafka-consumer-groups --describe --group "$group" --offsets >"$WORK/lag" 2>&1 || true
  wait "$members_job" || true
  # The tool exits 0 on errors too (an unknown group, no broker): its "Error:" line tells.
  for file in "$WORK/lag" "$WORK/members"; do
    if grep -q '^Error: ' "$file"; then
      grep '^Error: ' "$file" | head -n1 >&2
      die "could not describe consumer group $group on $BROKERS" \
        "(the groups there: scripts/kafka-tools.sh kafka-consumer-groups --list)"
    fi
  done
  echo "Consumer group $group on $BROKERS"
  echo
  echo "Members, with the partitions assigned to each:"
  if grep -q 'has no active members' "$WORK/members"; then
    echo "(none: no consumer of the group is running)"
  else
    sed '/^$/d' "$WORK/members"
  fi
  echo
  echo "Lag per partition (CURRENT-OFFSET: committed by the group; LAG: LOG-END-OFFSET minus it):"
  grep -v -e '^$' -e 'has no active members' "$WORK/lag"
}

cmd_tail() {
  local topic=${1:-${KAFKA_TOPIC:-orders}} n=${2:-10}
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "N=$n: expected a positive number of messages"
  start_and_end_offsets "topic $topic does not exist" --topic "^${topic//./\\.}\$"
  # The last N of each partition (fewer where it holds fewer); the newest N of them are shown.
  local count
  count=$(awk -F: -v n="$n" 'NR == FNR { start[$2] = $3; next }
    { from = $3 - n; if (from < start[$2]) from = start[$2]
      printf "%s,%s,%s\n", $1, $2, from > out; total += $3 - from }
    END { print total + 0 }' out="$WORK/reset.csv" "$WORK/start" "$WORK/end")
  if ((count == 0)); then echo "# $topic holds no messages"; return; fi
  # The console consumer starts a partition only at "earliest", "latest" or, for one partition
  # at a time, an offset. A throwaway group whose committed offsets are set first starts every
  # partition at its last N in one run; it is deleted afterwards.
  TAIL_GROUP="orderstream-tail-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
  local group=$TAIL_GROUP
  trap 'tool kafka-consumer-groups --delete --group "$TAIL_GROUP" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
  tool kafka-consumer-groups --group "$group" --reset-offsets --from-file "$WORK/reset.csv" \
    --execute >/dev/null || die "could not set the offsets of the reading group $group"
  # Fields apart by \x1f, records by \x1e: keys and values may hold tabs and line breaks.
  # --timeout-ms: offsets without a message (compaction, transaction markers) end the wait.
  tool kafka-console-consumer --topic "$topic" --group "$group" --max-messages "$count" \
    --timeout-ms 5000 --command-property enable.auto.commit=false \
    --formatter-property print.timestamp=true --formatter-property print.partition=true \
    --formatter-property print.offset=true --formatter-property print.headers=true \
    --formatter-property print.key=true --formatter-property key.separator=$'\x1f' \
    --formatter-property headers.separator=$'\x1d' --formatter-property line.separator=$'\x1e' \
    >"$WORK/messages" 2>"$WORK/consumer.err" || {
    cat "$WORK/consumer.err" >&2
    die "the console consumer failed on $topic"
  }
  # Its count and its advertisement for the KIP-848 protocol say nothing here; the rest might.
  grep -v -e 'KIP-848' -e '^Processed a total of' "$WORK/consumer.err" >&2 || true
  python3 - "$topic" "$n" "$WORK/messages" <<'PY'
"""Sorts the records read (each partition's last N) by time and prints the newest N, oldest first."""
import datetime
import re
import sys

topic, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # kept out of the terminal; \t and \n stay


def shown(raw: bytes, *, keep_breaks: bool = True) -> str:
    text = raw.decode("utf-8", errors="backslashreplace")
    text = CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if keep_breaks else text.replace("\n", "\\n").replace("\t", "\\t")


records = []
for chunk in open(path, "rb").read().split(b"\x1e"):
    if not chunk:
        continue
    stamp, partition, offset, headers, key, value = chunk.split(b"\x1f", 5)
    kind, _, millis = stamp.decode().partition(":")
    records.append((int(millis) if millis else -1, int(partition.split(b":")[1]),
                    int(offset.split(b":")[1]), kind, headers, key, value))
records.sort(key=lambda r: r[:3])
newest = records[-n:]
print(f"# {topic}: the newest {len(newest)} of its messages, oldest first")
for millis, partition, offset, kind, headers, key, value in newest:
    when = (datetime.datetime.fromtimestamp(millis / 1000, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z") if millis >= 0 else "no time")
    print(f"--- partition {partition}  offset {offset}  {when} ({kind})")
    print(f"key:     {shown(key, keep_breaks=False)}")
    header_list = [] if headers == b"NO_HEADERS" else headers.split(b"\x1d")
    print(f"headers: {', '.join(shown(h, keep_breaks=False) for h in header_list) or '(none)'}")
    print(f"value:   {shown(value)}")
PY
}

case ${1:-} in
  topics | groups | tail | kafka-*)
    broker_reachable || die "no Kafka broker answers at $BROKERS (KAFKA_BROKERS); the local one: \`make stack-up\`" ;;
esac

case ${1:-} in
  topics) write_client_config; cmd_topics "${2:-}" ;;
  groups) write_client_config; cmd_groups "${2:-}" ;;
  tail) write_client_config; cmd_tail "${2:-}" "${3:-}" ;;
  kafka-topics | kafka-consumer-groups | kafka-console-consumer | kafka-get-offsets)
    write_client_config; tool "$@" ;;
  *) echo "usage: $0 topics [TOPIC_REGEX] | groups [GROUP] | tail [TOPIC] [N] |" \
       "kafka-topics|kafka-consumer-groups|kafka-console-consumer|kafka-get-offsets ARGS..." >&2
     exit 2 ;;
esac
