# syntax=docker/dockerfile:1
# orderstream: Kafka `orders` -> PostgreSQL -> Faust Table cache -> HTTP on :8081.
#   docker build -t orderstream .      (or: docker compose up --build)

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- build: install the package and its dependencies into a venv -------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /app
# The dependencies first, from the lock alone (`make lock`; the versions the tests ran with): this
# layer is rebuilt only when requirements.lock changes, not on every change to the source. On
# x86_64 every locked package ships a manylinux wheel for CPython 3.11, so no compiler is needed;
# on arm64 (Apple silicon) faust-streaming alone comes as source, built without its optional C
# speed-ups when there is no compiler.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

# Then the package itself, without resolving anything again. setup.py copies web/, sql/ and
# openapi.yaml into it (orderstream/_assets/), where orderstream/config.py finds them.
COPY setup.py setup.cfg pyproject.toml MANIFEST.in README.md openapi.yaml ./
COPY orderstream/ orderstream/
COPY sql/ sql/
COPY web/ web/
RUN pip install --no-cache-dir --no-deps .

# ---- runtime: the venv (the package, its dependencies and its files); nothing else -------------
FROM ${PYTHON_IMAGE} AS runtime

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/data

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
 && mkdir -p /data \
 && chown app:app /data

# Owned by root, so the service cannot change its code, migrations or page.
COPY --from=build /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

# RocksDB table state (Faust datadir). Declared after the chown so a new named volume starts out
# owned by `app`.
VOLUME ["/data"]

EXPOSE 8081

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8081/health', timeout=3)" || exit 1

CMD ["faust", "-A", "orderstream", "worker", "-l", "info"]
