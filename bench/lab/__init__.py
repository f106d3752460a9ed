"""The bench's lab: orders, fresh databases, topics and workers on the stack, cleaned up after.

The stack is the one the service would use: PG_URL and KAFKA_BROKERS from the environment, with
the service's defaults (orderstream.config.Settings). Every database is `bench_<hex>` and every
topic and consumer group starts with `bench-<run id>-`; all of them are dropped at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from uuid import uuid4

import aiohttp
import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from yarl import URL

from orderstream.config import Settings
from orderstream.migrations import migrate_database
from orderstream.order.generator import random_orders
from orderstream.order.records import Order, encode_order
from orderstream.repo import OrderRepository
from orderstream.topics import TopicPartitionsMismatch, ensure_topics

from .warm import WarmGroup
from .worker import BenchWorker

# The worker gets only the settings the bench gives it, not the caller's.
SETTING_NAMES = frozenset(field.name.upper() for field in fields(Settings))
TOPIC_ATTEMPTS = 10


@dataclass(frozen=True)
class Dataset:
    """N generated orders, as Records and as the bytes the producer sends (its encode_order)."""

    orders: list[Order]
    bodies: list[bytes]

    @property
    def n(self) -> int:
        return len(self.orders)

    @property
    def uids(self) -> list[str]:
        return [order.order_uid for order in self.orders]

    @property
    def keys(self) -> list[bytes]:
        return [order.order_uid.encode() for order in self.orders]

    @classmethod
    def generate(cls, n: int, seed: int) -> Dataset:
        orders = list(random_orders(seed, n))
        return cls(orders, [encode_order(order) for order in orders])


class Lab:
    """Owns everything a benchmark run creates; `async with Lab(...)` removes it all again."""

    def __init__(self, settings: Settings, *, seed: int = 1, timeout: float = 900) -> None:
        self.settings = settings
        self.brokers = ",".join(settings.kafka_brokers)
        self.seed = seed
        self.timeout = timeout
        self.prefix = f"bench-{uuid4().hex[:8]}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self._counter = itertools.count()
        self._datasets: dict[int, Dataset] = {}
        self._seeded: dict[int, str] = {}
        self._databases: list[str] = []
        self._warm: dict[tuple[int, int], WarmGroup] = {}
        self._workers: list[BenchWorker] = []
        self._http: aiohttp.ClientSession | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Lab:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for worker in self._workers:
            worker.kill()
        if self._http is not None:
            await self._http.close()
        for name in self._databases:
            await self.admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await self._delete_topics()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "use the Lab in `async with`"
        return self._http

    def name(self, kind: str) -> str:
        """A topic or group name of this run: `bench-<run>-<kind>-<n>`."""
        return f"{self.prefix}-{kind}-{next(self._counter)}"

    def path(self, kind: str) -> Path:
        return self.tmp / self.name(kind)

    # --- orders -------------------------------------------------------------------------

    def dataset(self, n: int) -> Dataset:
        """The first ``n`` orders of the run's seed, generated once per size."""
        if n not in self._datasets:
            self._datasets[n] = Dataset.generate(n, self.seed)
        return self._datasets[n]

    # --- PostgreSQL ---------------------------------------------------------------------

    async def admin_execute(self, statement: str) -> None:
        conn = await asyncpg.connect(self.settings.pg_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    async def database(self) -> str:
        """A fresh database migrated with the production sql/ files."""
        name = f"bench_{uuid4().hex[:12]}"
        await self.admin_execute(f'CREATE DATABASE "{name}"')
        self._databases.append(name)
        server = URL(self.settings.pg_url)
        url = str(server.with_path(f"/{name}").with_query(server.query))
        await asyncio.to_thread(migrate_database, url, self.settings.sql_dir)
        return url

    async def seeded_database(self, dataset: Dataset, batch_size: int) -> str:
        """A database holding ``dataset``, written once per run by the repository's batch path."""
        if dataset.n not in self._seeded:
            url = await self.database()
            await write_batches(url, dataset, batch_size)
            self._seeded[dataset.n] = url
        return self._seeded[dataset.n]

    def adopt_seeded(self, dataset: Dataset, url: str) -> None:
        """Remember a database that holds exactly ``dataset`` (ingest leaves one behind)."""
        self._seeded.setdefault(dataset.n, url)

    async def server_version(self) -> str:
        conn = await asyncpg.connect(self.settings.pg_url)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    # --- Kafka --------------------------------------------------------------------------

    async def topic(self, partitions: int) -> str:
        name, attempts = self.name("orders"), 0
        while True:
            try:
                await ensure_topics(self.brokers, [name], partitions=partitions)
                return name
            except TopicPartitionsMismatch:
                # Kafka may describe a topic it has just created with no partitions yet.
                attempts += 1
                if attempts == TOPIC_ATTEMPTS:
                    raise
                await asyncio.sleep(0.2)

    async def produce(self, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> float:
        """Publish ``values`` keyed by ``keys`` (Kafka's default partitioner); return seconds."""
        started = time.perf_counter()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.brokers, acks="all", linger_ms=5, max_batch_size=256 * 1024
        )
        await producer.start()
        try:
            sent = [
                await producer.send(topic, value, key=key)
                for key, value in zip(keys, values, strict=True)
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        return time.perf_counter() - started

    async def _delete_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.brokers)
        await admin.start()
        try:
            ours = [name for name in await admin.list_topics() if name.startswith(self.prefix)]
            if ours:
                await admin.delete_topics(ours)
        finally:
            await admin.close()

    # --- workers ------------------------------------------------------------------------

    def start_worker(self, **settings: str) -> BenchWorker:
        """Start `python -m orderstream worker` with these settings and a data dir of its own."""
        env = {name: value for name, value in os.environ.items() if name not in SETTING_NAMES}
        env.update({"KAFKA_BROKERS": self.brokers, "DATA_DIR": str(self.path("data")), **settings})
        worker = BenchWorker(
            env,
            log_path=self.path("worker").with_suffix(".log"),
            http=self.http,
            timeout=self.timeout,
        ).start()
        self._workers.append(worker)
        return worker

    async def stop_worker(self, worker: BenchWorker) -> float:
        """SIGTERM and wait; return the seconds it took."""
        started = time.monotonic()
        code = await asyncio.to_thread(worker.stop)
        if code != 0:
            raise RuntimeError(f"worker exited with {code}:\n{worker.log_tail()}")
        return time.monotonic() - started

    async def warm_group(self, dataset: Dataset, partitions: int, batch_size: int) -> WarmGroup:
        """The run's group caching ``dataset``, warmed up from PostgreSQL on first use."""
        key = (dataset.n, partitions)
        if key not in self._warm:
            self._warm[key] = await WarmGroup.create(self, dataset, partitions, batch_size)
        return self._warm[key]


async def write_batches(pg_url: str, dataset: Dataset, batch_size: int) -> float:
    """Upsert the orders through OrderRepository in batches, one at a time; return seconds.

    The worker's call with the bodies it has encoded already (for its cache), so the floor
    does not encode either.
    """
    encoded = [
        (uid, body, offset)
        for offset, (uid, body) in enumerate(zip(dataset.uids, dataset.bodies, strict=True))
    ]
    repo = OrderRepository(pg_url)
    await repo.connect()
    try:
        started = time.perf_counter()
        for first in range(0, len(encoded), batch_size):
            await repo.upsert_encoded(encoded[first : first + batch_size])
        return time.perf_counter() - started
    finally:
        await repo.close()


async def truncate(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("TRUNCATE orders CASCADE")
    finally:
        await conn.close()


async def count_orders(pg_url: str) -> int:
    conn = await asyncpg.connect(pg_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM orders"))
    finally:
        await conn.close()
