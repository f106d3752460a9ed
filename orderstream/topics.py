"""Create the service's topics before the consumer subscribes, with the configured partitions
and replication factor."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    InvalidReplicationFactorError,
    KafkaConnectionError,
    TopicAlreadyExistsError,
)

logger = logging.getLogger(__name__)

NO_ERROR = 0
# A topic created a moment ago can show up in metadata with no partitions yet.
METADATA_TIMEOUT = 10.0
BROKER_DEFAULT_RF = "default.replication.factor"


class TopicPartitionsMismatch(RuntimeError):
    """An existing topic has another partition count than KAFKA_PARTITIONS says."""


async def ensure_topics(
    brokers: str,
    names: Sequence[str],
    *,
    partitions: int,
    replication: int = 0,
    security: Mapping[str, Any] | None = None,
) -> int:
    """Create missing topics and check that existing ones have ``partitions`` partitions.

    Faust declares its topics while subscribing, and a topic created in that moment is
    missing from the first assignment; creating them here first avoids that. Topics get
    ``replication`` replicas, 0 meaning the broker's default; returns the number used.
    ``security`` are the TLS/SASL arguments of the other clients (kafka_security.py).
    """
    security = security or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers, **security)
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        # aiokafka logged why just before (refused credentials, an untrusted certificate, no
        # answer); its own error names only the addresses, so say what to check.
        await admin.close()
        protocol = security.get("security_protocol", "PLAINTEXT")
        raise RuntimeError(
            f"Could not connect to Kafka at {brokers} over {protocol}: see the error logged "
            "above; check KAFKA_BROKERS, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, "
            "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SSL_CAFILE"
        ) from exc
    try:
        replication = replication or await broker_default_replication(admin)
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication) for name in names]
        )
        for name, code, *detail in response.topic_errors:
            if code == NO_ERROR:
                logger.info(
                    "Created topic %s with %d partitions and %d replicas",
                    name,
                    partitions,
                    replication,
                )
            elif code == InvalidReplicationFactorError.errno:
                raise RuntimeError(
                    f"Kafka refused to create topic {name!r} with {replication} replicas "
                    f"({''.join(map(str, detail))}); set KAFKA_REPLICATION_FACTOR to at most "
                    "the number of brokers"
                )
            elif code != TopicAlreadyExistsError.errno:
                raise RuntimeError(f"Kafka refused to create topic {name!r} (error {code})")
        described = await describe_when_ready(admin, names)
        for name, topic in described.items():
            found = len(topic["partitions"])
            if found != partitions:
                raise TopicPartitionsMismatch(
                    f"Topic {name!r} has {found} partitions but KAFKA_PARTITIONS is "
                    f"{partitions}; set KAFKA_PARTITIONS={found} or recreate the topic"
                )
            warn_if_fewer_replicas(name, topic, replication)
        return replication
    finally:
        await admin.close()


async def broker_default_replication(admin: AIOKafkaAdminClient) -> int:
    """The cluster's ``default.replication.factor``, read from one broker's configuration.

    Kafka takes replication factor -1 as "the broker's default" only from CreateTopics v4 on
    (KIP-464); aiokafka sends at most v3 and refuses -1 itself, so the value is asked for.
    """
    cluster = await admin.describe_cluster()
    node = cluster["brokers"][0]["node_id"]
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, str(node), {BROKER_DEFAULT_RF: None})]
    )
    reason = "not in the answer"
    for resource in responses[0].to_object()["resources"]:
        if resource["error_code"] != NO_ERROR:
            reason = f"error {resource['error_code']}: {resource['error_message']}"
            continue
        for entry in resource["config_entries"]:
            if entry["config_names"] == BROKER_DEFAULT_RF:
                return int(entry["config_value"])
    # Say what to do: a client may lack the right to read broker configs (ACLs).
    raise RuntimeError(
        f"Could not read {BROKER_DEFAULT_RF} from broker {node} ({reason}); "
        "set KAFKA_REPLICATION_FACTOR"
    )


def warn_if_fewer_replicas(name: str, topic: dict[str, Any], replication: int) -> None:
    """Say so when an existing topic has fewer replicas than new ones get: it is not re-created."""
    found = min(len(partition["replicas"]) for partition in topic["partitions"])
    if found < replication:
        logger.warning(
            "Topic %s has %d replicas, fewer than the %d of new topics "
            "(KAFKA_REPLICATION_FACTOR or the broker's default): losing a broker "
            "can lose its data until its partitions are reassigned",
            name,
            found,
            replication,
        )


async def describe_when_ready(
    admin: AIOKafkaAdminClient, names: Sequence[str], timeout: float = METADATA_TIMEOUT
) -> dict[str, dict[str, Any]]:
    """Each topic's metadata, once the metadata of just-created topics has their partitions."""
    deadline = time.monotonic() + timeout
    while True:
        topics = {topic["topic"]: topic for topic in await admin.describe_topics(list(names))}
        if (
            all(topics.get(name, {}).get("partitions") for name in names)
            or time.monotonic() > deadline
        ):
            return topics
        await asyncio.sleep(0.1)
