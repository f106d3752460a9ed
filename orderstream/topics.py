"""Create the service's topics before the consumer subscribes, with the configured partitions."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

logger = logging.getLogger(__name__)

NO_ERROR = 0
# A topic created a moment ago can show up in metadata with no partitions yet.
METADATA_TIMEOUT = 10.0


class TopicPartitionsMismatch(RuntimeError):
    """An existing topic has another partition count than KAFKA_PARTITIONS says."""


async def ensure_topics(brokers: str, names: Sequence[str], *, partitions: int,
                        replication: int = 1) -> None:
    """Create missing topics and check that existing ones have ``partitions`` partitions.

    Faust declares its topics while subscribing, and a topic created in that moment is
    missing from the first assignment; creating them here first avoids that.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication) for name in names])
        for name, code, *_ in response.topic_errors:
            if code == NO_ERROR:
                logger.info("Created topic %s with %d partitions", name, partitions)
            elif code != TopicAlreadyExistsError.errno:
                raise RuntimeError(f"Kafka refused to create topic {name!r} (error {code})")
        for name, found in (await partition_counts(admin, names)).items():
            if found != partitions:
                raise TopicPartitionsMismatch(
                    f"Topic {name!r} has {found} partitions but KAFKA_PARTITIONS is "
                    f"{partitions}; set KAFKA_PARTITIONS={found} or recreate the topic")
    finally:
        await admin.close()


async def partition_counts(admin: AIOKafkaAdminClient, names: Sequence[str],
                           timeout: float = METADATA_TIMEOUT) -> dict[str, int]:
    """Each topic's partition count, once the metadata of just-created topics has them."""
    deadline = time.monotonic() + timeout
    while True:
        counts = {topic["topic"]: len(topic["partitions"])
                  for topic in await admin.describe_topics(list(names))}
        if all(counts.get(name) for name in names) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.1)
