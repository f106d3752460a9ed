"""What the tests (tests/) and the benchmarks (bench/) share: worker processes, polling with
deadlines, free ports, admin SQL, and the row-by-row writer of the Go service's design.

Both import this module; neither imports the other.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
import aiohttp.web
import asyncpg

from orderstream.order import Order

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``check`` until it returns a truthy value; fail with its last answer at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s; last answer: {last!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def admin_execute(url: str, statement: str) -> None:
    """Run one statement on a connection of its own (not the repository's pool)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def hermetic(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a process of the service that reads no .env file (a developer's ./.env
    must not change what a test or a benchmark runs), unless ``env`` names one."""
    return {"ENV_FILE": "", **env}


def orderstream_command(
    *args: str, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m orderstream ARGS` (the faust CLI of the app) to completion."""
    return subprocess.run(
        [sys.executable, "-m", "orderstream", *args],
        env=hermetic(env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


@dataclass
class Worker:
    """One `faust -A orderstream worker` process with its own port, data dir and log."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Worker:
        env = {**hermetic(self.env), "HTTP_ADDR": f"127.0.0.1:{self.port}"}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orderstream", "worker", "-l", "info"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    async def wait_serving(self, session: aiohttp.ClientSession, timeout: float = 90) -> None:
        """Wait until the web server answers (Faust starts it after table recovery)."""

        async def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                async with session.get(f"{self.url}/order/probe-{self.port}") as reply:
                    return reply.status in (200, 401, 404)  # 401: API_TOKENS set
            except aiohttp.ClientError:
                return False

        try:
            await eventually(answers, timeout=timeout, interval=0.2, what="worker serving")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: the worker leaves its group and commits what it stored."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired as exc:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"worker ignored SIGTERM for {timeout}s:\n{self.log_tail()}"
                ) from exc
        return self.process.returncode

    def kill(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


# --- the naive design (the Go service's): one transaction per order, one INSERT per row ---

INSERT_ORDER = """
INSERT INTO orders (order_uid, track_number, entry, locale, internal_signature, customer_id,
                    delivery_service, shardkey, sm_id, date_created, oof_shard)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""

INSERT_DELIVERY = """
INSERT INTO deliveries (order_uid, name, phone, zip, city, address, region, email)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""

INSERT_PAYMENT = """
INSERT INTO payments (order_uid, transaction, request_id, currency, provider, amount, payment_dt,
                      bank, delivery_cost, goods_total, custom_fee)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""

INSERT_ITEM = """
INSERT INTO items (order_uid, position, chrt_id, track_number, price, rid, name, sale, size,
                   total_price, nm_id, brand, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
"""


async def store_one(conn: asyncpg.Connection, o: Order) -> None:
    """Store one order in its own transaction, one prepared statement (one round trip) at a time."""
    d, p = o.delivery, o.payment
    async with conn.transaction():
        await conn.execute(
            INSERT_ORDER,
            o.order_uid,
            o.track_number,
            o.entry,
            o.locale,
            o.internal_signature,
            o.customer_id,
            o.delivery_service,
            o.shardkey,
            o.sm_id,
            o.date_created,
            o.oof_shard,
        )
        await conn.execute(
            INSERT_DELIVERY,
            o.order_uid,
            d.name,
            d.phone,
            d.zip,
            d.city,
            d.address,
            d.region,
            d.email,
        )
        await conn.execute(
            INSERT_PAYMENT,
            o.order_uid,
            p.transaction,
            p.request_id,
            p.currency,
            p.provider,
            p.amount,
            p.payment_dt,
            p.bank,
            p.delivery_cost,
            p.goods_total,
            p.custom_fee,
        )
        for position, i in enumerate(o.items):
            await conn.execute(
                INSERT_ITEM,
                o.order_uid,
                position,
                i.chrt_id,
                i.track_number,
                i.price,
                i.rid,
                i.name,
                i.sale,
                i.size,
                i.total_price,
                i.nm_id,
                i.brand,
                i.status,
            )


# --- an OTLP/HTTP receiver: where a worker with OTEL_TRACES_EXPORTER=otlp sends its spans ---


class OtlpSink:
    """A collector's OTLP/HTTP trace endpoint on the loopback (POST /v1/traces, protobuf):
    keeps each span's name and attributes (unless ``parse`` is false: then only the requests
    and bytes are counted), answers 200. ``endpoint`` is the worker's
    OTEL_EXPORTER_OTLP_ENDPOINT."""

    def __init__(self, parse: bool = True) -> None:
        self.parse = parse
        self.spans: list[tuple[str, dict[str, object]]] = []
        self.requests = 0
        self.bytes = 0
        self.port = free_port()
        self._runner: aiohttp.web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _receive(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = await request.read()
        self.requests += 1
        self.bytes += len(body)
        if not self.parse:
            return aiohttp.web.Response(body=b"", content_type="application/x-protobuf")
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {
                        item.key: getattr(
                            item.value, item.value.WhichOneof("value") or "string_value"
                        )
                        for item in span.attributes
                    }
                    self.spans.append((span.name, attributes))
        return aiohttp.web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def __aenter__(self) -> OtlpSink:
        app = aiohttp.web.Application()
        app.router.add_post("/v1/traces", self._receive)
        self._runner = aiohttp.web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
