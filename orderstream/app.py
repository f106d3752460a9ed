"""create_app(settings): the Faust app, its topics, its lifecycle and what runs on it.

Nothing here runs on import: ``orderstream.app`` (the attribute of the package, for
`faust -A orderstream`) is built by create_app(load_settings()) the first time it is asked for.
"""

from __future__ import annotations

import gc
import logging
import socket
import sys
from typing import Any, cast

import faust
from aiokafka import AIOKafkaProducer
from faust.transport.consumer import Consumer
from faust.types import TopicT
from faust.types.transports import TransportT

from . import (
    agents,
    commands,
    fastpath,
    kafka_security,
    kafka_watch,
    metrics,
    tables,
    tracing,
    views,
)
from .cache import RecentOrders, negative, store_url
from .config import ConfigError, Settings, load_env_file
from .consumer import KafkaTransport
from .logs import logging_config
from .repo import OrderRepository
from .republish import MAX_REQUEST_BYTES
from .shutdown import arm_shutdown_deadline
from .topics import ensure_topics

logger = logging.getLogger(__name__)

# Record batches of the batch producer up to this size: a produce request carries a bundle.
BATCH_PRODUCER_MAX_BYTES = 1024 * 1024


def load_settings() -> Settings:
    """Read the settings (the environment, then ./.env), or stop with the message that names
    the bad variable."""
    load_env_file()
    try:
        settings = Settings.from_env()
        kafka_security.check(settings)  # TLS/SASL combinations that cannot connect
        return settings
    except ConfigError as exc:
        sys.exit(f"orderstream: {exc}")


def tune_garbage_collector() -> None:
    """Collect young objects every 50,000 allocations instead of CPython's 700.

    A batch of orders is tens of thousands of objects that live until the batch is written;
    at the default threshold the collector walks them again and again, a large share of
    validating and encoding a batch (README "Performance"). The objects of start-up
    (modules, the app) never become garbage: frozen, no collection walks them.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def app_datadir(settings: Settings) -> str:
    """DATA_DIR/<KAFKA_GROUP_ID>: the table files of one app, apart from any other app's.

    The files hold offsets of the app's own changelog topic; another group id sharing them
    would find them ahead of its changelog. Braces are escaped: Faust formats the path.
    """
    path = str(settings.data_dir / settings.kafka_group_id)
    return path.replace("{", "{{").replace("}", "}}")


class OrderApp(faust.App):
    """A Faust app that owns its connections: opened on start, closed after the agents stop.

    They are the PostgreSQL pool and a Kafka producer of whole record batches (Faust's
    producer sends message by message; see cache/changelog.py).
    """

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        host, port = settings.http_addr
        public_host = socket.gethostname() if host in ("0.0.0.0", "::") else host
        super().__init__(
            settings.kafka_group_id,
            broker=settings.kafka_url,
            # TLS and SASL for Faust's consumer and producer (the worker, `send`, `produce`).
            broker_credentials=kafka_security.faust_credentials(settings),
            # The cache's RocksDB store: bounded memory, stale or broken files rebuilt.
            store=store_url(settings),
            datadir=app_datadir(settings),
            topic_partitions=settings.kafka_partitions,
            # Replicas of the topics Faust creates itself (the table's changelog, the leader
            # topic); KAFKA_REPLICATION_FACTOR=0, the broker's default, is resolved on start.
            topic_replication_factor=settings.kafka_replication_factor or 1,
            # Standby copies of other workers' cache partitions: a worker taking one over
            # has it already instead of replaying the whole changelog.
            table_standby_replicas=settings.cache_standby_replicas,
            key_serializer="raw",
            value_serializer="raw",
            web_bind=host,
            web_port=port,
            canonical_url=f"http://{public_host}:{port}",
            # A worker that died is noticed in ~10 s instead of Kafka's default 45 s.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=3.0,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            # The broker's limit decides; a refused dead letter or forward shrinks (republish.py).
            producer_max_request_size=MAX_REQUEST_BYTES,
            web_stats_enabled=False,
            # Faust's /table/<name>/<key>/ served cached orders past the lookup's validation,
            # metrics and tokens, and /router/ the cluster's layout. Lookups are forwarded to
            # our own /order route (cache/routing.ask_owner), so neither is needed.
            web_tables_enabled=False,
            web_router_enabled=False,
            logging_config=logging_config(settings.log_level, settings.log_format),
            **kwargs,
        )
        self.settings = settings
        if settings.faust_fast_path:  # FAUST_FAST_PATH: batches from fetcher to agent
            fastpath.install(self)
        # Declared by create_app: the topics, then the cache over the Table.
        self.orders_topic: TopicT
        self.dead_letter_topic: TopicT
        self.cache_updates_topic: TopicT
        self.recent_orders: RecentOrders
        self.unknown_orders: negative.UnknownOrders  # the negative cache of lookups
        self.repo = OrderRepository(settings.pg_url, pool_size=settings.pg_pool_size)
        self._batch_producer: AIOKafkaProducer | None = None

    def _new_transport(self) -> TransportT:
        # Faust's aiokafka transport, whose consumer fetches only the partitions it asked
        # for (consumer.py): standby copies lost changelog records otherwise.
        return KafkaTransport(self.conf.broker_consumer, self)

    @property
    def batch_producer(self) -> AIOKafkaProducer:
        if self._batch_producer is None:
            raise RuntimeError("the batch producer is started with the app")
        return self._batch_producer

    async def on_first_start(self) -> None:
        # Faust creates the data directories without their parents (DATA_DIR/<group>).
        self.conf.tabledir.mkdir(parents=True, exist_ok=True)
        await super().on_first_start()

    async def on_start(self) -> None:
        await super().on_start()
        tune_garbage_collector()
        replication = await ensure_topics(
            ",".join(self.settings.kafka_brokers),
            [
                topic.get_topic_name()
                for topic in (self.orders_topic, self.dead_letter_topic, self.cache_updates_topic)
            ],
            partitions=self.settings.kafka_partitions,
            replication=self.settings.kafka_replication_factor,
            security=kafka_security.client_kwargs(self.settings),
        )
        # Before the tables and the assignor start: they create their topics with this.
        self.conf.topic_replication_factor = replication
        self._batch_producer = AIOKafkaProducer(
            bootstrap_servers=",".join(self.settings.kafka_brokers),
            acks="all",
            max_batch_size=BATCH_PRODUCER_MAX_BYTES,
            max_request_size=MAX_REQUEST_BYTES,
            **kafka_security.client_kwargs(self.settings),
        )
        await self._batch_producer.start()
        # From here on /ready knows whether Kafka answers, and an outage is logged once.
        self.add_future(
            kafka_watch.watch(
                self._batch_producer.client,
                self.settings.kafka_topic,
                ",".join(self.settings.kafka_brokers),
            )
        )
        await self.repo.connect()
        logger.info("PostgreSQL pool ready for %s", self.settings.pg_url_redacted)

    async def on_stop(self) -> None:
        # Stopping starts here (before the agents stop): bound how long it may take.
        arm_shutdown_deadline(self.loop, self.settings.shutdown_timeout)
        await super().on_stop()

    async def on_shutdown(self) -> None:
        # After the consumer and agents have stopped: the last batch is stored by now.
        await self.repo.close()
        if self._batch_producer is not None:
            await self._batch_producer.stop()
        tracing.shutdown()  # export the last batch's spans
        await super().on_shutdown()


def create_app(settings: Settings) -> OrderApp:
    """The app of ``settings``: topics, cache, agents, web routes, metrics and commands."""
    tracing.setup(settings)  # OTEL_*: off by default, then nothing is installed
    app = OrderApp(settings)
    declare_topics(app, settings)
    app.on_rebalance_complete.connect(rewind_uncommitted_partitions)  # type: ignore[arg-type]
    app.recent_orders = tables.declare_cache(app)
    app.unknown_orders = negative.install(app)
    metrics.install(app)
    agents.register(app)
    commands.register(app)
    views.register(app)
    return app


def declare_topics(app: OrderApp, settings: Settings) -> None:
    """The orders, dead-letter and cache-updates topics, all of KAFKA_PARTITIONS partitions.

    The table's changelog must have as many partitions as its source topics: every topic is
    created with KAFKA_PARTITIONS partitions (by ensure_topics on start; internal=True lets
    Faust declare them too, for `send` and `produce`).
    """
    app.orders_topic = app.topic(
        settings.kafka_topic,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.kafka_partitions,
        internal=True,
    )
    app.dead_letter_topic = app.topic(
        settings.dead_letter_topic,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.kafka_partitions,
        internal=True,
    )
    # Cache writes travel through a topic of their own: a Table can be changed only while
    # iterating an event of the key's partition, which a batch of stored orders is not.
    # Each message is a bundle of one partition's orders (cache/bundle.py).
    app.cache_updates_topic = app.topic(
        f"{settings.kafka_group_id}-order-cache-updates",
        key_type=bytes,
        value_type=bytes,
        partitions=settings.kafka_partitions,
        internal=True,
    )


async def rewind_uncommitted_partitions(sender: faust.App, *args: Any, **kwargs: Any) -> None:
    """Read source partitions that have no committed offset yet from their first message.

    Messages fetched during a rebalance are dropped with the agents' buffers when streams
    resume; Faust then seeks each partition to its committed offset to fetch them again,
    but aiokafka does not seek a partition without one (or at 0), so its reading went on
    past them. A partition handed over before its first commit (say, workers starting
    together) lost orders and cache updates that way. Sent on each rebalance just before
    Faust's seek; replaying is safe, as storing and caching are idempotent.
    """
    app = cast(OrderApp, sender)
    consumer = cast(Consumer, app.consumer)
    sources = {app.orders_topic.get_topic_name(), app.cache_updates_topic.get_topic_name()}
    assigned = [tp for tp in consumer.assignment() if tp.topic in sources]
    if not assigned:
        return
    committed = await consumer.seek_to_committed()
    fresh = [tp for tp in assigned if not committed.get(tp)]
    if fresh:
        await consumer.seek_wait(await consumer.earliest_offsets(*fresh))
        logger.info(
            "Reading %d partitions without a committed offset from the start: %s",
            len(fresh),
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(fresh)),
        )
