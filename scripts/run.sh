#!/usr/bin/env bash
# `make run` after `make setup stack-up migrate`: start the worker, publish demo orders,
# print where to look, then wait; Ctrl-C (or SIGTERM) stops the worker cleanly.
# Env: HTTP_ADDR (default :8081), KAFKA_TOPIC (default orders), as the worker reads them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
FAUST=.venv/bin/faust
LOG=.stack/worker.log
TOPIC=${KAFKA_TOPIC:-orders}
PORT=${HTTP_ADDR:-:8081}
PORT=${PORT##*:}
MODEL=../shared/fixtures/model.json
[[ -f $MODEL ]] || MODEL=tests/fixtures/model.json
DEMO_ID=b563feb7b2b84b6test
DEADLINE_SECONDS=90

say() { echo "[run] $*"; }
fail() { echo "[run] ERROR: $*" >&2; echo "----- last 40 lines of $LOG -----" >&2; tail -n 40 "$LOG" >&2; exit 1; }

stop_worker() {
  trap - EXIT INT TERM
  if kill -0 "$WORKER" 2>/dev/null; then
    say "stopping the worker (pid $WORKER)"
    kill -TERM "$WORKER" 2>/dev/null || true
    wait "$WORKER" || true
  fi
}

# Polls $1 until it answers 2xx; fails if the worker exits or the deadline passes.
wait_for() {
  local deadline=$((SECONDS + DEADLINE_SECONDS))
  until curl -fs -o /dev/null "$1"; do
    kill -0 "$WORKER" 2>/dev/null || fail "the worker exited"
    ((SECONDS < deadline)) || fail "no answer from $1 within ${DEADLINE_SECONDS}s"
    sleep 0.5
  done
}

mkdir -p .stack
"$FAUST" -A orderstream worker -l info >"$LOG" 2>&1 &
WORKER=$!
trap stop_worker EXIT
trap 'stop_worker; exit 130' INT
trap 'stop_worker; exit 143' TERM

say "worker started (pid $WORKER), logging to $LOG; waiting for http://127.0.0.1:$PORT/"
wait_for "http://127.0.0.1:$PORT/"

say "publishing 5 random orders and $MODEL to $TOPIC"
"$FAUST" -A orderstream produce -n 5 --seed 42
"$FAUST" -A orderstream send "$TOPIC" "$(cat "$MODEL")" >/dev/null
wait_for "http://127.0.0.1:$PORT/order/$DEMO_ID"

cat <<EOF

orderstream is running.
  page:          http://localhost:$PORT/
  an order id:   $DEMO_ID
  from a shell:  curl -i http://localhost:$PORT/order/$DEMO_ID
  worker log:    $LOG
Ctrl-C stops the worker.
EOF
wait "$WORKER"
