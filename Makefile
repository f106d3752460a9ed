# orderstream: the two commands are `make run` and `make test`; the rest are their parts.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
N ?= 5
INTERVAL ?= 0.5

.PHONY: setup stack-up stack-down stack-status stack-logs migrate migrate-down run test test-unit producer clean \
	up down logs docker-producer docker-migrate cache-off-up cache-on-up lock

setup: $(STAMP)
	@bash scripts/stack.sh fetch
	@bash scripts/browser.sh

# The lock (README "Dependencies and packaging"): every package pinned for Python 3.11 on Linux,
# resolved from setup.cfg by `make lock`. requirements.lock is what the image installs,
# requirements-test.lock adds the test extra: what the venv (and so CI) installs.
LOCK := requirements.lock
TEST_LOCK := requirements-test.lock
UV_VERSION := 0.13.9
UV_COMPILE = $(BIN)/uv pip compile setup.cfg --python-version 3.11 --python-platform linux \
	--custom-compile-command 'make lock' --quiet

# Reinstall only when the package metadata or the lock changes: the locked versions, then the
# package itself (editable, nothing resolved again).
$(STAMP): setup.cfg pyproject.toml setup.py $(LOCK) $(TEST_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r $(TEST_LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

# Resolve the lock files again after a change to setup.cfg, keeping every pin that still fits
# (LOCK_ARGS=--upgrade: the newest versions in range; LOCK_ARGS='-P aiohttp': that package's).
# The image's lock takes the test lock's versions, so the image runs what the tests ran.
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(UV_COMPILE) --extra test $(LOCK_ARGS) -o $(TEST_LOCK)
	$(UV_COMPILE) --constraints $(TEST_LOCK) -o $(LOCK)

stack-up:
	bash scripts/stack.sh up

stack-down:
	bash scripts/stack.sh down

stack-status:
	bash scripts/stack.sh status

stack-logs:
	bash scripts/stack.sh logs

# An option beside the single broker: 3 KRaft nodes on 19092-19094 (README "Local stack").
.PHONY: cluster-up cluster-down cluster-status
cluster-up:
	bash scripts/stack.sh cluster-up

cluster-down:
	bash scripts/stack.sh cluster-down

cluster-status:
	bash scripts/stack.sh cluster-status

# Apache Kafka's own tools on the fetched jars, against KAFKA_BROKERS (README "Kafka tools"); they
# need only Java and the jars of `make setup`, so they do not run it. TOPIC (a regular expression
# for topics; one topic for tail, default KAFKA_TOPIC or orders), GROUP (default KAFKA_GROUP_ID or
# order-svc), N: the newest N messages (default 10).
.PHONY: topics groups tail
topics:
	@bash scripts/kafka-tools.sh topics "$(TOPIC)"

groups:
	@bash scripts/kafka-tools.sh groups "$(GROUP)"

tail:
	@bash scripts/kafka-tools.sh tail "$(TOPIC)" "$(if $(filter file,$(origin N)),10,$(N))"

# migrate, migrate-down and producer need only the venv (no Java, no jars): they work against
# any PostgreSQL and Kafka, the compose stack's included.
migrate: $(STAMP)
	$(BIN)/faust -A orderstream migrate

migrate-down: $(STAMP)
	$(BIN)/faust -A orderstream migrate --down

# Stack up, schema migrated, worker running, demo orders published.
run: setup stack-up migrate
	bash scripts/run.sh

producer: $(STAMP)
	$(BIN)/faust -A orderstream produce -n $(N) --interval $(INTERVAL)

# Test files run on TEST_WORKERS processes, a file's tests in one of them (most tests wait on
# Kafka and PostgreSQL, not on the CPU); TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: setup stack-up
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The tests that need no Kafka and no PostgreSQL (tests/unit/).
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# Benchmarks (bench/, README "Performance"), results in bench/results/. Parts and flags:
# make bench BENCH_PARTS='ingest lookup' BENCH_ARGS='--orders 20000 --duration 5'
BENCH_PARTS ?= all
.PHONY: bench bench-smoke
bench: setup stack-up $(VENV)/.bench-installed
	@command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
		|| echo "bench: wrk is not installed, lookups use the Python load generator"
	$(BIN)/python -m bench $(BENCH_PARTS) $(BENCH_ARGS)

# Every part at a tiny size: the harness runs and records complete results (tests/integration/test_bench.py).
bench-smoke: setup stack-up
	$(BIN)/python -m pytest tests/integration/test_bench.py

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	@touch $@

clean: stack-down
	rm -rf .stack $(VENV) orderstream-data

# --- Docker (docker-compose.yaml); not run by CI, where Docker does not run ------------------
up:
	docker compose up -d --build

# Removes the volumes too: Kafka's topics, PostgreSQL's orders and the cache are gone.
down:
	docker compose down -v

logs:
	docker compose logs -f app

docker-producer:
	N=$(N) INTERVAL=$(INTERVAL) docker compose run --rm producer

# The compose stack's schema: `make up` applies it before the app starts; this applies what is
# pending (after a `git pull`) without restarting anything.
docker-migrate:
	docker compose run --rm migrate

# Recreate only the app with the cache off (every lookup reads PostgreSQL) or on again;
# Kafka, PostgreSQL and their data stay as they are.
cache-off-up:
	CACHE_ENABLED=false docker compose up -d --build app

cache-on-up:
	CACHE_ENABLED=true docker compose up -d --build app
