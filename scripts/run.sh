#!/usr/bin/env bash
# `make run` after `make setup stack-up migrate`: start WORKERS workers (default 1), publish
# demo orders, print where to look, then wait; Ctrl-C (or SIGTERM) stops the workers cleanly.
# Env: WORKERS, HTTP_ADDR (default :8081; worker i listens on port + i), DATA_DIR (worker i
# uses DATA_DIR/worker-i when there are several), KAFKA_TOPIC (default orders).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/dotenv.sh
load_env_file  # ./.env, under the environment: the workers read it too
FAUST=.venv/bin/faust
WORKERS=${WORKERS:-1}
TOPIC=${KAFKA_TOPIC:-orders}
ADDR=${HTTP_ADDR:-:8081}
HOST=${ADDR%:*}
BASE_PORT=${ADDR##*:}
DATA=${DATA_DIR:-orderstream-data}
MODEL=model.json
DEMO_ID=b563feb7b2b84b6test
DEADLINE_SECONDS=90
PIDS=()

say() { echo "[run] $*"; }
fail() {
  echo "[run] ERROR: $*" >&2
  for log in .stack/worker-*.log; do echo "----- last 20 lines of $log -----" >&2; tail -n 20 "$log" >&2; done
  exit 1
}

stop_workers() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && { say "stopping worker pid $pid"; kill -TERM "$pid" 2>/dev/null || true; }
  done
  for pid in "${PIDS[@]}"; do wait "$pid" || true; done
}

# Polls $1 until it answers 2xx; fails if a worker exits or the deadline passes.
wait_for() {
  local deadline=$((SECONDS + DEADLINE_SECONDS)) pid
  until curl -fs -o /dev/null "$1"; do
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || fail "worker pid $pid exited"; done
    ((SECONDS < deadline)) || fail "no answer from $1 within ${DEADLINE_SECONDS}s"
    sleep 0.5
  done
}

mkdir -p .stack
trap stop_workers EXIT
trap 'stop_workers; exit 130' INT
trap 'stop_workers; exit 143' TERM
for ((i = 0; i < WORKERS; i++)); do
  port=$((BASE_PORT + i))
  data=$DATA
  ((WORKERS == 1)) || data=$DATA/worker-$i
  HTTP_ADDR=$HOST:$port DATA_DIR=$data "$FAUST" -A orderstream worker >".stack/worker-$i.log" 2>&1 &
  PIDS+=($!)
  say "worker $i started (pid $!, http://localhost:$port/, log .stack/worker-$i.log)"
done
for ((i = 0; i < WORKERS; i++)); do wait_for "http://127.0.0.1:$((BASE_PORT + i))/ready"; done

say "publishing 5 random orders and $MODEL to $TOPIC"
"$FAUST" -A orderstream produce -n 5 --seed 42
"$FAUST" -A orderstream send "$TOPIC" "$(cat "$MODEL")" >/dev/null
wait_for "http://127.0.0.1:$BASE_PORT/order/$DEMO_ID"

cat <<EOF

orderstream is running ($WORKERS worker(s); any of them answers any lookup).
  page:          http://localhost:$BASE_PORT/
  an order id:   $DEMO_ID
  from a shell:  curl -i http://localhost:$BASE_PORT/order/$DEMO_ID
  health:        curl http://localhost:$BASE_PORT/ready ; curl http://localhost:$BASE_PORT/metrics
  worker logs:   .stack/worker-*.log
Ctrl-C stops the workers.
EOF
wait "${PIDS[@]}"
