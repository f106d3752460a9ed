"""Is Kafka reachable? One watcher answers /ready and logs an outage once as it starts and ends.

While the brokers are down, aiokafka logs an ERROR for every connection attempt of every
client (~35 lines a second here), which buries everything else. A log filter drops those
lines during an outage the watcher has seen, and otherwise lets each kind through once a
minute; the watcher's own two lines say when the outage began and how long it lasted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
import time

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

logger = logging.getLogger(__name__)

PING_INTERVAL = 2.0
PING_TIMEOUT = 2.0
# Outside an outage, a connection error of one kind is logged at most once this often.
REPEAT_AFTER = 60.0
# What aiokafka says, at WARNING and above, when it cannot reach a broker.
CONNECTION_MESSAGES = (
    "Unable connect to node",
    "Unable to update metadata",
    "Unable to request metadata",
    "Group Coordinator Request failed",
    "Marking the coordinator dead",
    "Failed fetch messages",
    "Got error produce response",
    "Coordinator dead",
)
_NUMBERS = re.compile(r"\d+")


class KafkaOutage(logging.Filter):
    """The state of the brokers as the watcher sees it, and the filter of aiokafka's errors.

    Logging happens on Faust's consumer thread too, hence the lock.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.since: float | None = None
        self.reason = ""
        self.kind = ""  # the error's class name: says what failed without naming hosts
        self.suppressed = 0
        self._last_logged: dict[str, float] = {}

    @property
    def down(self) -> bool:
        return self.since is not None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith("aiokafka"):
            return True
        text = record.getMessage()
        if not any(message in text for message in CONNECTION_MESSAGES):
            return True
        kind = _NUMBERS.sub("N", text)[:80]
        now = time.monotonic()
        with self._lock:
            if (
                self.since is None
                and now - self._last_logged.get(kind, -REPEAT_AFTER) >= REPEAT_AFTER
            ):
                self._last_logged[kind] = now
                return True
            self.suppressed += 1
            return False

    def begin(self, reason: str, kind: str) -> bool:
        """Record that Kafka does not answer; True when this starts an outage."""
        with self._lock:
            self.reason, self.kind = reason, kind
            if self.since is not None:
                return False
            self.since, self.suppressed = time.monotonic(), 0
            return True

    def end(self) -> tuple[float, int] | None:
        """Record that Kafka answers; (seconds down, lines not logged) when an outage ends."""
        with self._lock:
            if self.since is None:
                return None
            ended = (time.monotonic() - self.since, self.suppressed)
            self.since, self.reason, self.kind = None, "", ""
            return ended


# The worker's one outage record: the logging configuration and the watcher both use it.
OUTAGE = KafkaOutage()


def outage_filter() -> KafkaOutage:
    """Factory for logging.config.dictConfig."""
    return OUTAGE


async def ping(client: AIOKafkaClient, topic: str) -> None:
    """Ask the known brokers, in random order, for ``topic``'s metadata until one answers.

    Raises KafkaError (or TimeoutError) when none does: with one broker of a cluster down,
    ingest goes on through the others, so any answer counts.
    """
    nodes = [broker.nodeId for broker in client.cluster.brokers()]
    random.shuffle(nodes)
    failure: Exception = KafkaError("no broker is known")
    for node in nodes:
        try:
            await asyncio.wait_for(client.send(node, MetadataRequest([topic])), PING_TIMEOUT)
            return
        except (TimeoutError, KafkaError, OSError) as exc:
            failure = exc
    raise failure


async def check_once(client: AIOKafkaClient, topic: str, brokers: str) -> None:
    """Ping Kafka and log an outage's start or end."""
    try:
        await ping(client, topic)
    except (TimeoutError, KafkaError, OSError) as exc:
        reason = str(exc) or type(exc).__name__  # aiokafka's errors name themselves
        if OUTAGE.begin(reason, type(exc).__name__):
            logger.error("Kafka unreachable at %s, ingest paused: %s", brokers, reason)
        return
    ended = OUTAGE.end()
    if ended is not None:
        seconds, suppressed = ended
        logger.warning(
            "Kafka is back after %.1f s; ingest resumes (%d connection errors not logged)",
            seconds,
            suppressed,
        )


async def watch(client: AIOKafkaClient, topic: str, brokers: str) -> None:
    """Check Kafka every PING_INTERVAL seconds, from start-up on, until cancelled."""
    while True:
        await check_once(client, topic, brokers)
        await asyncio.sleep(PING_INTERVAL)
