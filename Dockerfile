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
COPY setup.cfg pyproject.toml README.md ./
COPY orderstream/ orderstream/
COPY sql/ sql/
COPY web/ web/
COPY openapi.yaml ./
# Every dependency ships a manylinux wheel for CPython 3.11, so no compiler is needed here.
RUN pip install --no-cache-dir .

# ---- runtime: the venv, the SQL migrations, the static page and the API description; nothing else -
FROM ${PYTHON_IMAGE} AS runtime

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The package lives in site-packages, so the defaults of these settings (next to the package)
# would point there: point them at /app instead. DATA_DIR is the volume below.
ENV WEB_DIR=/app/web \
    SQL_DIR=/app/sql \
    OPENAPI_FILE=/app/openapi.yaml \
    DATA_DIR=/data

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
 && mkdir -p /data \
 && chown app:app /data

COPY --from=build /opt/venv /opt/venv
# The package itself lives in the venv; /app holds what it reads at run time (sql/, web/,
# openapi.yaml), owned by root so the service cannot change it.
COPY --from=build /app/sql /app/sql
COPY --from=build /app/web /app/web
COPY --from=build /app/openapi.yaml /app/openapi.yaml

WORKDIR /app
USER 10001:10001

# RocksDB table state (Faust datadir). Declared after the chown so a new named volume starts out
# owned by `app`.
VOLUME ["/data"]

EXPOSE 8081

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8081/health', timeout=3)" || exit 1

CMD ["faust", "-A", "orderstream", "worker", "-l", "info"]
