"""`make topics`, `make groups` and `make tail`: Apache Kafka's own tools on the real broker.

Each test runs the make target as a user would (`make -s ...` from the repository root) against
the shared stack's broker, on a topic or group of its own, and reads what it prints. The tools
are JVMs (~1.5 s to start), so each test makes few calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from harness import REPO_ROOT, eventually

from ..private_stack import PrivateStack


async def make(*args: str, env: Mapping[str, str], timeout: float = 60) -> tuple[int, str, str]:
    """`make -s ARGS` in the repository: exit code, stdout, stderr.

    Run without blocking the event loop, so that a consumer of the test keeps heartbeating
    (and stays a member of its group) while the tool looks at the group.
    """
    process = await asyncio.create_subprocess_exec(
        "make",
        "-s",
        *args,
        cwd=REPO_ROOT,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def make_ok(*args: str, env: Mapping[str, str]) -> str:
    code, out, err = await make(*args, env=env)
    assert code == 0, f"make {' '.join(args)} exited {code}:\n{out}\n{err}"
    return out


@pytest.fixture
def tools_env(kafka_brokers: str) -> dict[str, str]:
    """The caller's environment without its Kafka settings (nor a ./.env), pointed at the
    shared broker."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KAFKA_", "MAKE", "MFLAGS"))
    }
    return {**env, "KAFKA_BROKERS": kafka_brokers, "ENV_FILE": ""}


async def create_topic(brokers: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def fill(producer: AIOKafkaProducer, topic: str, per_partition: Mapping[int, int]) -> None:
    for partition, count in per_partition.items():
        for i in range(count):
            await producer.send_and_wait(
                topic, b"{}", key=f"k{partition}-{i}".encode(), partition=partition
            )


def table_rows(output: str, first_column: str) -> list[list[str]]:
    """The whitespace-split rows of the tools' tables whose first cell is ``first_column``."""
    return [line.split() for line in output.splitlines() if line.split()[:1] == [first_column]]


async def test_topics_lists_partitions_with_start_and_end_offsets(
    tools_env: dict[str, str], producer: AIOKafkaProducer, unique_name: str
) -> None:
    topic = f"tools-{unique_name}"
    await create_topic(tools_env["KAFKA_BROKERS"], topic, 3)
    await fill(producer, topic, {0: 3, 1: 1})

    out = await make_ok("topics", f"TOPIC={topic}", env=tools_env)

    assert out.splitlines()[0].split() == ["TOPIC", "PARTITION", "START_OFFSET", "END_OFFSET"]
    assert table_rows(out, topic) == [
        [topic, "0", "0", "3"],
        [topic, "1", "0", "1"],
        [topic, "2", "0", "0"],
    ]


async def test_topics_without_a_filter_lists_every_topic_but_kafkas_own(
    tools_env: dict[str, str], producer: AIOKafkaProducer, unique_name: str
) -> None:
    topic = f"tools-{unique_name}"
    await create_topic(tools_env["KAFKA_BROKERS"], topic, 1)
    await fill(producer, topic, {0: 2})

    out = await make_ok("topics", env=tools_env)

    assert table_rows(out, topic) == [[topic, "0", "0", "2"]]
    assert "__consumer_offsets" not in out


async def test_groups_shows_the_members_and_the_lag_of_each_partition(
    tools_env: dict[str, str], producer: AIOKafkaProducer, unique_name: str
) -> None:
    topic, group = f"tools-{unique_name}", f"tools-group-{unique_name}"
    await create_topic(tools_env["KAFKA_BROKERS"], topic, 3)
    await fill(producer, topic, {0: 3, 1: 2, 2: 2})
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=tools_env["KAFKA_BROKERS"],
        group_id=group,
        client_id=f"client-{unique_name}",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        await eventually(
            lambda: asyncio.sleep(0, len(consumer.assignment()) == 3),
            what="the consumer assigned all 3 partitions",
        )
        await consumer.commit(
            {TopicPartition(topic, 0): 1, TopicPartition(topic, 1): 0, TopicPartition(topic, 2): 2}
        )

        out = await make_ok("groups", f"GROUP={group}", env=tools_env)
    finally:
        await consumer.stop()

    members, lag = out.split("Lag per partition")
    # The one member, by its client id, with its 3 partitions.
    member_rows = table_rows(members, group)
    assert len(member_rows) == 1 and f"client-{unique_name}" in member_rows[0], members
    assert f"{topic}:0,1,2" in members.replace(" ", ""), members
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID ...
    assert [row[1:6] for row in table_rows(lag, group)] == [
        [topic, "0", "1", "3", "2"],
        [topic, "1", "0", "2", "2"],
        [topic, "2", "2", "2", "0"],
    ], lag


async def test_groups_defaults_to_the_workers_group(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    tools_env: dict[str, str],
    model_json: bytes,
) -> None:
    """A running worker (Faust's own assignor) is listed with its partitions; its lag drains."""
    topic, group = pipeline_env["KAFKA_TOPIC"], pipeline_env["KAFKA_GROUP_ID"]
    await start_worker()
    await producer.send_and_wait(topic, model_json, key=b"b563feb7b2b84b6test", partition=2)
    env = {**tools_env, "KAFKA_GROUP_ID": group}

    async def committed() -> str:
        out = await make_ok("groups", env=env)
        rows = {
            row[2]: row[3:6]
            for row in table_rows(out.split("Lag per partition")[1], group)
            if row[1] == topic
        }
        return out if rows.get("2") == ["1", "1", "0"] else ""

    out = await eventually(committed, timeout=60, interval=1, what="the worker's commit shown")
    assert f"Consumer group {group} on" in out
    members = out.split("Lag per partition")[0]
    assert len(table_rows(members, group)) == 1, members
    assert f"{topic}:0,1,2,3" in members.replace(" ", ""), members
    lag_rows = [
        row for row in table_rows(out.split("Lag per partition")[1], group) if row[1] == topic
    ]
    assert [row[2] for row in lag_rows] == ["0", "1", "2", "3"]


async def test_tail_prints_the_newest_n_messages_with_key_headers_and_value(
    tools_env: dict[str, str], producer: AIOKafkaProducer, unique_name: str
) -> None:
    topic = f"tools-{unique_name}"
    await create_topic(tools_env["KAFKA_BROKERS"], topic, 3)
    base = (int(time.time()) - 60) * 1000  # whole seconds: the printed times are exact
    # Six messages over three partitions, one second apart; the newest four are shown.
    for i in range(6):
        await producer.send_and_wait(
            topic,
            f'{{"n": {i},\n "text": "a\tb"}}'.encode(),
            key=f"key-{i}".encode(),
            partition=(i * 2) % 3,
            timestamp_ms=base + i * 1000,
            headers=[("x-error", f"reason {i}".encode()), ("x-seq", str(i).encode())],
        )

    out = await make_ok("tail", f"TOPIC={topic}", "N=4", env=tools_env)

    blocks = out.split("--- ")[1:]
    assert out.startswith(f"# {topic}: the newest 4 of its messages, oldest first")
    assert len(blocks) == 4, out
    for block, i in zip(blocks, range(2, 6), strict=True):
        lines = block.splitlines()
        when = datetime.fromtimestamp((base + i * 1000) / 1000, UTC)
        assert lines[0] == (
            f"partition {(i * 2) % 3}  offset {i // 3}  {when:%Y-%m-%dT%H:%M:%S}.000Z (CreateTime)"
        )
        assert lines[1] == f"key:     key-{i}"
        assert lines[2] == f"headers: x-error:reason {i}, x-seq:{i}"
        assert "\n".join(lines[3:]) == f'value:   {{"n": {i},\n "text": "a\tb"}}'


async def test_tail_leaves_no_consumer_group_behind(
    tools_env: dict[str, str], producer: AIOKafkaProducer, unique_name: str
) -> None:
    topic = f"tools-{unique_name}"
    await create_topic(tools_env["KAFKA_BROKERS"], topic, 1)
    await fill(producer, topic, {0: 1})

    out = await make_ok("tail", f"TOPIC={topic}", env=tools_env)  # N defaults to 10

    assert out.startswith(f"# {topic}: the newest 1 of its messages")
    admin = AIOKafkaAdminClient(bootstrap_servers=tools_env["KAFKA_BROKERS"])
    await admin.start()
    try:
        groups = [group for group, _ in await admin.list_consumer_groups()]
    finally:
        await admin.close()
    assert not [group for group in groups if str(group).startswith("orderstream-tail-")]


async def test_tail_of_a_missing_topic_says_so(tools_env: dict[str, str], unique_name: str) -> None:
    code, out, err = await make("tail", f"TOPIC=missing-{unique_name}", env=tools_env)
    assert code != 0
    assert f"topic missing-{unique_name} does not exist" in err


async def test_without_the_fetched_jars_the_targets_name_make_setup(
    tools_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**tools_env, "KAFKA_LIBS": str(tmp_path / "no-jars")}
    for target in ("topics", "groups", "tail"):
        code, out, err = await make(target, env=env)
        assert code != 0
        assert "run `make setup`" in err, err


# --- a secured broker of this module's own (PrivateStack(secure=True)) ----------------------


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    stack = PrivateStack(tmp_path_factory.mktemp("tools-secure-kafka"), secure=True)
    stack.kafka_up()
    yield stack
    stack.down()


@pytest.mark.parametrize(
    "protocol, mechanism",
    [
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        (
            "SSL",
            "",
        ),  # mutual TLS: KAFKA_SSL_CERTFILE/KEYFILE as PEM files, as the service takes them
        ("SASL_SSL", "PLAIN"),
    ],
)
async def test_topics_over_the_services_security_settings(
    secure_broker: PrivateStack,
    tools_env: dict[str, str],
    unique_name: str,
    protocol: str,
    mechanism: str,
) -> None:
    topic = f"tools-{unique_name}"
    await create_topic(secure_broker.kafka_brokers, topic, 2)
    env = {**tools_env, **secure_broker.secure_env(protocol, mechanism or "PLAIN")}

    code, out, err = await make("topics", f"TOPIC={topic}", env=env)

    assert code == 0, f"{out}\n{err}"
    assert table_rows(out, topic) == [[topic, "0", "0", "0"], [topic, "1", "0", "0"]]
    assert secure_broker.sasl_user[1] not in out + err


# --- the jars: an existing checkout gets the tools jar on its next `make setup` ---------------


def test_fetch_adds_the_tools_jar_to_jars_fetched_before_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    """A checkout whose jars were fetched before the pom named kafka-tools: `stack.sh fetch`
    (what `make setup` runs) adds it, drops what the pom no longer names, and leaves every
    jar that stays as the very file it was, so a broker running from them is not disturbed."""
    shared = REPO_ROOT / ".stack" / "kafka" / "libs"
    libs = tmp_path / "kafka" / "libs"
    libs.mkdir(parents=True)
    for jar in shared.glob("*.jar"):
        if not jar.name.startswith("kafka-tools-"):
            shutil.copy2(jar, libs / jar.name)
    (libs / "obsolete-1.0.jar").write_bytes(b"PK")
    (libs / ".fetched").write_text("the checksum of an older pom\n")
    kept = {jar.name: jar.stat().st_ino for jar in libs.glob("*.jar")}

    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "stack.sh"), "fetch"],
        env={**os.environ, "STACK_DIR": str(tmp_path), "ENV_FILE": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    names = {jar.name for jar in libs.glob("*.jar")}
    assert {jar.name for jar in shared.glob("*.jar")} == names
    assert "obsolete-1.0.jar" not in names
    assert any(name.startswith("kafka-tools-") for name in names)
    assert all(
        libs.joinpath(name).stat().st_ino == inode for name, inode in kept.items() if name in names
    )
    pom_sum = hashlib.sha256((REPO_ROOT / "scripts" / "kafka" / "pom.xml").read_bytes()).hexdigest()
    assert (libs / ".fetched").read_text().strip() == pom_sum
    assert not (tmp_path / "kafka" / "libs.new").exists()
