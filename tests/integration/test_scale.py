"""Scaling out: several worker processes share 8 partitions, fail over and take in a newcomer.

Real Kafka and PostgreSQL, real `faust worker` processes. Lookups go out with bounded
concurrency (a few dozen at a time) and every wait polls with a deadline. The figures the
issue asks for (time from a worker's death to full service on the survivors, the rebalance
pause seen by lookups) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from harness import Worker, eventually
from orderstream.order.generator import random_orders
from orderstream.order.partitioning import partition_of
from orderstream.order.records import Order, encode_order, order_from_dict

from .test_pipeline import lookup, row_counts, served_from, stored_uids, wait_stored

T = TypeVar("T")

PARTITIONS = 8
CONCURRENCY = 50  # lookups in flight at once: enough to be quick, few enough for 2 cores
# Orders a second in the streams: what two workers absorb on a 2-core machine, so the figures
# measure failover and rebalancing rather than a growing backlog (at 1,000/s the time to full
# service grows by the ~7 s the survivors need to catch up).
STREAM_RATE = 500


# --- helpers ------------------------------------------------------------------------------


async def gather_bounded(
    calls: Iterable[Callable[[], Awaitable[T]]], limit: int = CONCURRENCY
) -> list[T]:
    """Run the calls with at most ``limit`` in flight; results in the calls' order."""
    gate = asyncio.Semaphore(limit)

    async def run(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return await asyncio.gather(*(run(call) for call in calls))


async def start_workers(start_worker: Any, names: Sequence[str], **env: str) -> list[Worker]:
    """Start workers side by side with 8 partitions and wait until each serves HTTP."""
    return list(
        await asyncio.gather(
            *(start_worker(name, KAFKA_PARTITIONS=str(PARTITIONS), **env) for name in names)
        )
    )


async def readiness(http: aiohttp.ClientSession, worker: Worker) -> tuple[int, Any]:
    try:
        async with http.get(f"{worker.url}/ready") as reply:
            return reply.status, orjson.loads(await reply.read())
    except aiohttp.ClientError as exc:
        return 0, repr(exc)


ASSIGNMENT = re.compile(r"generation (\d+), \S+ partitions \[([\d, ]*)\]")


@dataclass(frozen=True)
class Assignment:
    generation: int
    partitions: frozenset[int]


async def assignment(http: aiohttp.ClientSession, worker: Worker) -> Assignment | None:
    """The worker's generation and orders partitions when /ready is 200, else None."""
    status, body = await readiness(http, worker)
    if status != 200:
        return None
    match = ASSIGNMENT.fullmatch(body["checks"]["kafka_assignment"]["detail"])
    assert match, body
    return Assignment(int(match[1]), frozenset(int(p) for p in match[2].split(",") if p.strip()))


async def settled_assignment(
    http: aiohttp.ClientSession,
    workers: Sequence[Worker],
    timeout: float = 90,
    partitions: int = PARTITIONS,
) -> dict[str, frozenset[int]]:
    """Wait until every worker is ready in one generation and the ``partitions`` are split
    among them, each partition to one worker; return each worker's URL and partitions."""

    async def settled() -> dict[str, frozenset[int]] | None:
        found = await asyncio.gather(*(assignment(http, w) for w in workers))
        if any(a is None for a in found) or len({a.generation for a in found}) != 1:
            return None
        owned = [a.partitions for a in found]
        if sorted(p for ps in owned for p in ps) != list(range(partitions)):
            return None
        return {w.url: a.partitions for w, a in zip(workers, found, strict=True)}

    return await eventually(
        settled, timeout=timeout, interval=0.2, what="one generation, every partition assigned once"
    )


async def timed(awaitable: Awaitable[T]) -> tuple[T, float]:
    """The awaitable's result and the time.monotonic() it came at."""
    result = await awaitable
    return result, time.monotonic()


async def wait_count(database_url: str, at_least: int, timeout: float = 120) -> None:
    async def enough() -> int | None:
        count = (await row_counts(database_url))["orders"]
        return count if count >= at_least else None

    await eventually(
        enough, timeout=timeout, interval=0.2, what=f"at least {at_least} orders in PostgreSQL"
    )


async def produce_steadily(
    producer: AIOKafkaProducer, topic: str, orders: Sequence[Order], rate: float
) -> None:
    """Publish keyed by order_uid at about ``rate`` orders a second, then flush."""
    bodies = [(order.order_uid.encode(), encode_order(order)) for order in orders]
    started = time.monotonic()
    for index, (key, body) in enumerate(bodies):
        await producer.send(topic, body, key=key)
        ahead = index / rate - (time.monotonic() - started)
        if ahead > 0.01:
            await asyncio.sleep(ahead)
    await producer.flush()


def assert_all_stored_once(counts: dict[str, int], orders: Sequence[Order]) -> None:
    """Every order exactly once: one row per order in each table, every item once."""
    assert len({o.order_uid for o in orders}) == len(orders)  # the generator made no twins
    expected = {
        "orders": len(orders),
        "deliveries": len(orders),
        "payments": len(orders),
        "items": sum(len(o.items) for o in orders),
    }
    assert counts == expected


@dataclass
class Answer:
    status: int
    source: str | None
    served_by: str | None
    body: bytes
    seconds: float  # how long the lookup took
    at: float  # time.monotonic() when it answered


async def ask(http: aiohttp.ClientSession, worker: Worker, uid: str) -> Answer:
    started = time.monotonic()
    status, headers, body = await lookup(http, worker, uid)
    answered = time.monotonic()
    return Answer(
        status,
        headers.get("X-Source"),
        headers.get("X-Served-By"),
        body,
        answered - started,
        answered,
    )


async def ask_all(http: aiohttp.ClientSession, pairs: Sequence[tuple[Worker, str]]) -> list[Answer]:
    return await gather_bounded((lambda w=worker, u=uid: ask(http, w, u)) for worker, uid in pairs)


async def wait_all_cached(
    http: aiohttp.ClientSession,
    pairs: Sequence[tuple[Worker, str]],
    *,
    timeout: float,
    every_answer: list[Answer] | None = None,
) -> dict[tuple[str, str], Answer]:
    """Ask each (worker, uid) until it is served from the cache, re-asking only those that
    were not; every answer on the way must be 200. Returns the cached answers, and adds all
    answers to ``every_answer``."""
    deadline = time.monotonic() + timeout
    pending = list(pairs)
    cached: dict[tuple[str, str], Answer] = {}
    while True:
        answers = await ask_all(http, pending)
        if every_answer is not None:
            every_answer.extend(answers)
        failed = [
            (w.url, u, a.status, a.body[:200])
            for (w, u), a in zip(pending, answers, strict=True)
            if a.status != 200
        ]
        assert not failed, f"{len(failed)} lookups failed, e.g. {failed[:5]}"
        for (worker, uid), answer in zip(pending, answers, strict=True):
            if answer.source == "cache":
                cached[worker.url, uid] = answer
        pending = [
            (w, u) for (w, u), a in zip(pending, answers, strict=True) if a.source != "cache"
        ]
        if not pending:
            return cached
        assert time.monotonic() < deadline, (
            f"{len(pending)} of {len(pairs)} lookups still not from the cache after "
            f"{timeout:.0f}s, e.g. {[(w.url, u) for w, u in pending[:5]]}"
        )
        await asyncio.sleep(0.2)


def assert_all_200(pairs: Sequence[tuple[Worker, str]], answers: Sequence[Answer]) -> None:
    failed = [
        (w.url, u, a.status, a.body[:200])
        for (w, u), a in zip(pairs, answers, strict=True)
        if a.status != 200
    ]
    assert not failed, f"{len(failed)} of {len(pairs)} lookups failed, e.g. {failed[:5]}"


# --- the tests ----------------------------------------------------------------------------


async def test_three_workers_serve_every_order_from_its_owners_cache_on_any_port(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    # Forwarding to the owner: standby copies would answer some lookups themselves (tested below).
    workers = await start_workers(start_worker, ["a", "b", "c"], STANDBY_READ_MAX_LAG="off")
    orders = list(random_orders(101, 3000))
    topic = pipeline_env["KAFKA_TOPIC"]
    # A third keyed by order_uid, a third without a key, a third with a wrong key: the
    # last two arrive on arbitrary partitions and are re-published to their owner's.
    keys: list[bytes | None] = [
        (o.order_uid.encode(), None, f"wrong-{i}".encode())[i % 3] for i, o in enumerate(orders)
    ]
    for order, key in zip(orders, keys, strict=True):
        await producer.send(topic, encode_order(order), key=key)
    await producer.flush()
    await wait_stored(pipeline_env["PG_URL"], {o.order_uid for o in orders}, timeout=120)
    assert_all_stored_once(await row_counts(pipeline_env["PG_URL"]), orders)

    # Settled: one generation with every partition owned, then every order from the cache
    # on every port; the same generation afterwards, so all answers saw one assignment.
    owners = await settled_assignment(http, workers)
    pairs = [(worker, o.order_uid) for o in orders for worker in workers]
    cached = await wait_all_cached(http, pairs, timeout=60)
    assert await settled_assignment(http, workers) == owners, "the group rebalanced meanwhile"

    bodies = {o.order_uid: encode_order(o) for o in orders}
    served_by: dict[str, set[str | None]] = {}
    for (url, uid), answer in cached.items():
        assert answer.body == bodies[uid], (url, uid)
        served_by.setdefault(uid, set()).add(answer.served_by)
    # One owner per order, whichever port is asked: the worker holding its partition.
    assert all(len(by) == 1 for by in served_by.values())
    for uid, by in served_by.items():
        (owner,) = by
        assert partition_of(uid.encode(), PARTITIONS) in owners[str(owner)], (uid, owner)
    assert {owner for by in served_by.values() for owner in by} == {w.url for w in workers}


async def test_killed_worker_partitions_are_taken_over_without_loss_and_it_rejoins(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    database = pipeline_env["PG_URL"]
    orders = list(random_orders(103, 20_000))
    workers = await start_workers(start_worker, ["a", "b", "c"])
    victim, survivors = workers[1], [workers[0], workers[2]]
    owners = await settled_assignment(http, workers)
    assert owners[victim.url], "the worker to kill owns no partition"

    producing = asyncio.create_task(
        produce_steadily(producer, pipeline_env["KAFKA_TOPIC"], orders, rate=STREAM_RATE)
    )
    await wait_count(database, 5000)
    # Orders stored before the kill; those of the victim's partitions were cached by it only.
    rng = random.Random(5)
    sample = rng.sample(sorted(await stored_uids(database)), 2000)
    victims_own = sum(
        partition_of(uid.encode(), PARTITIONS) in owners[victim.url] for uid in sample
    )

    killed_at = time.monotonic()
    victim.kill()
    # The survivors settle once the group notices (session timeout) and they have split
    # the victim's partitions; until then their forwards to it fall back to PostgreSQL.
    settling = asyncio.create_task(timed(settled_assignment(http, survivors)))
    during: list[Answer] = []
    try:
        # Time to full service: until each survivor has served each sampled order from its
        # cache.
        cached = await wait_all_cached(
            http, [(w, uid) for uid in sample for w in survivors], timeout=90, every_answer=during
        )
        taken_over, settled_at = await settling
    finally:
        settling.cancel()
    full_service = max(answer.at for answer in cached.values()) - killed_at
    print(
        f"\n[scale] kill -9 of 1 of 3 workers mid-stream: time to full service on the "
        f"survivors {full_service:.1f} s ({len(sample)} sampled orders, {victims_own} of them "
        f"the victim's, each from the cache of both survivors); the survivors were ready "
        f"in one generation with all partitions {settled_at - killed_at:.1f} s after "
        f"the kill; meanwhile {len(during)} lookups, all 200, "
        f"{sum(a.source == 'db' for a in during)} from PostgreSQL, the slowest "
        f"{max(a.seconds for a in during) * 1000:.0f} ms"
    )
    assert set().union(*taken_over.values()) == set(range(PARTITIONS))

    await producing
    await wait_stored(database, {o.order_uid for o in orders}, timeout=120)
    assert_all_stored_once(await row_counts(database), orders)

    # A new sample over the whole stream, from both survivors: 20,000 x 2 lookups would
    # take about a minute on a 2-core machine, with no path the sample does not cover.
    sample = rng.sample([o.order_uid for o in orders], 2000)
    checks = [(w, uid) for uid in sample for w in survivors]
    assert_all_200(checks, await ask_all(http, checks))

    # The killed worker comes back with the same name, so the same data directory.
    restarted_at = time.monotonic()
    back = await start_worker("b", KAFKA_PARTITIONS=str(PARTITIONS))
    owners = await settled_assignment(http, [*survivors, back])
    rejoined = time.monotonic() - restarted_at
    assert owners[back.url], "the restarted worker owns no partition"
    checks = [(back, uid) for uid in sample[:500]]
    assert_all_200(checks, await ask_all(http, checks))
    print(
        f"[scale] the killed worker restarted on its data dir: ready and sharing the "
        f"partitions {rejoined:.1f} s after its start"
    )


@dataclass
class LookupLog:
    """Every lookup the background prober made: when, where, what came back, how long."""

    answers: list[tuple[str, Answer]] = field(default_factory=list)  # (worker URL, answer)
    errors: list[tuple[str, str]] = field(default_factory=list)


async def probe(
    http: aiohttp.ClientSession,
    targets: list[Worker],
    known: list[str],
    log: LookupLog,
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    """Look up random stored orders on random workers until told to stop."""
    while not stop.is_set():
        if not known:
            await asyncio.sleep(0.05)
            continue
        worker, uid = rng.choice(targets), rng.choice(known)
        try:
            answer = await ask(http, worker, uid)
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.errors.append((worker.url, repr(exc)))
            continue
        log.answers.append((worker.url, answer))


async def test_a_fourth_worker_joins_mid_stream_and_lookups_never_fail(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    database = pipeline_env["PG_URL"]
    orders = list(random_orders(107, 10_000))
    targets = await start_workers(start_worker, ["a", "b", "c"])
    await settled_assignment(http, targets)

    known: list[str] = []  # stored orders, refreshed from PostgreSQL while the stream runs
    stop = asyncio.Event()
    log = LookupLog()

    async def refresh_known() -> None:
        while not stop.is_set():
            known[:] = sorted(await stored_uids(database))
            await asyncio.sleep(0.5)

    rng = random.Random(7)
    background = [
        asyncio.create_task(refresh_known()),
        *(asyncio.create_task(probe(http, targets, known, log, stop, rng)) for _ in range(4)),
    ]
    producing = asyncio.create_task(
        produce_steadily(producer, pipeline_env["KAFKA_TOPIC"], orders, rate=STREAM_RATE)
    )
    try:
        await wait_count(database, 2000)
        joined_at = time.monotonic()
        newcomer = await start_worker("d", KAFKA_PARTITIONS=str(PARTITIONS))
        targets.append(newcomer)  # probed from now on, before the group has settled
        owners = await settled_assignment(http, targets)
        settled_at = time.monotonic()
        await producing
        await wait_stored(database, {o.order_uid for o in orders}, timeout=120)
    finally:
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        producing.cancel()

    assert_all_stored_once(await row_counts(database), orders)
    assert owners[newcomer.url], "the new worker owns no partition"
    assert not log.errors, log.errors[:5]
    statuses: dict[int, int] = {}
    for _, answer in log.answers:
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
    assert statuses.keys() == {200}, statuses
    by_newcomer = [a for url, a in log.answers if url == newcomer.url]
    assert by_newcomer, "no lookup reached the new worker"
    during = [a for _, a in log.answers if joined_at <= a.at <= settled_at]
    slowest = max(during, key=lambda a: a.seconds)
    worst_url, worst = max(log.answers, key=lambda entry: entry[1].seconds)
    sources = {
        source: sum(a.source == source for _, a in log.answers)
        for source in ("cache", "cache-standby", "db")
    }
    print(
        f"\n[scale] a 4th worker joined mid-stream: {len(log.answers)} lookups, all 200 "
        f"({sources}); the group settled {settled_at - joined_at:.1f} s after its start; "
        f"rebalance pause seen by lookups {slowest.seconds * 1000:.0f} ms (slowest of "
        f"{len(during)} lookups in that window, median "
        f"{sorted(a.seconds for a in during)[len(during) // 2] * 1000:.0f} ms); slowest "
        f"overall {worst.seconds * 1000:.0f} ms, {worst.at - worst.seconds - joined_at:+.1f} s "
        f"from the 4th worker's start, X-Source {worst.source}, on "
        f"{'the new worker' if worst_url == newcomer.url else 'an old worker'}"
    )


async def test_worker_refuses_an_orders_topic_with_another_partition_count(
    pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    topic = pipeline_env["KAFKA_TOPIC"]
    admin = AIOKafkaAdminClient(bootstrap_servers=pipeline_env["KAFKA_BROKERS"])
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()

    worker = Worker(
        {**pipeline_env, "KAFKA_PARTITIONS": str(PARTITIONS), "DATA_DIR": str(tmp_path / "data")},
        log_path=tmp_path / "worker.log",
    ).start()
    assert worker.process is not None
    try:
        code = await asyncio.to_thread(worker.process.wait, 60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker still runs after 60 s:\n{worker.log_tail()}") from None
    finally:
        worker.kill()
    assert code != 0, worker.log_tail()
    log = worker.log()
    assert "KAFKA_PARTITIONS" in log and repr(topic) in log, worker.log_tail()


# --- standby reads (cache/standby.py) -----------------------------------------------------


def owner_and_standby(
    owners: dict[str, frozenset[int]], workers: Sequence[Worker], partition: int
) -> tuple[Worker, Worker]:
    """Of two workers, the one owning ``partition`` and the other (its standby)."""
    owner = next(w for w in workers if partition in owners[w.url])
    return owner, next(w for w in workers if w is not owner)


async def wait_all_from(
    http: aiohttp.ClientSession,
    expected: Sequence[tuple[Worker, str, str]],
    *,
    timeout: float,
) -> list[Answer]:
    """Ask each (worker, uid, source) until it answers 200 from that X-Source; the answers."""
    deadline = time.monotonic() + timeout
    pending = list(range(len(expected)))
    done: dict[int, Answer] = {}
    while pending:
        answers = await ask_all(http, [expected[i][:2] for i in pending])
        last = dict(zip(pending, answers, strict=True))
        for i, answer in last.items():
            if answer.status == 200 and answer.source == expected[i][2]:
                done[i] = answer
        pending = [i for i in pending if i not in done]
        assert time.monotonic() < deadline, (
            f"{len(pending)} of {len(expected)} lookups not from their expected source after "
            f"{timeout:.0f}s, e.g. "
            + str(
                [
                    (expected[i][0].url, *expected[i][1:], last[i].status, last[i].source)
                    for i in pending[:5]
                ]
            )
        )
        await asyncio.sleep(0.2)
    return [done[i] for i in range(len(expected))]


async def test_two_workers_answer_each_others_orders_from_their_standby_copies(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    workers = await start_workers(start_worker, ["a", "b"])  # 1 standby replica, bound 0
    orders = list(random_orders(109, 400))
    for order in orders:
        await producer.send(
            pipeline_env["KAFKA_TOPIC"], encode_order(order), key=order.order_uid.encode()
        )
    await producer.flush()
    await wait_stored(pipeline_env["PG_URL"], {o.order_uid for o in orders}, timeout=120)
    owners = await settled_assignment(http, workers)

    # Each worker answers every lookup itself: from its own partitions' cache, or from its
    # standby copy of the other worker's; nothing is forwarded.
    expected = [
        (
            worker,
            o.order_uid,
            "cache"
            if partition_of(o.order_uid.encode(), PARTITIONS) in owners[worker.url]
            else "cache-standby",
        )
        for o in orders
        for worker in workers
    ]
    answers = await wait_all_from(http, expected, timeout=60)
    assert await settled_assignment(http, workers) == owners, "the group rebalanced meanwhile"
    bodies = {o.order_uid: encode_order(o) for o in orders}
    for (worker, uid, _), answer in zip(expected, answers, strict=True):
        assert (answer.body, answer.served_by) == (bodies[uid], worker.url), (worker.url, uid)
    assert sum(source == "cache-standby" for _, _, source in expected) == len(orders)


def city_version(body: bytes) -> int:
    """The version number a test wrote into an order's delivery city ("City 12": 12)."""
    return int(orjson.loads(body)["delivery"]["city"].removeprefix("City "))


async def test_a_standby_answer_is_never_older_than_the_owners_when_the_lookup_arrived(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    order_dict: Callable[..., dict[str, Any]],
) -> None:
    """STANDBY_READ_MAX_LAG=0 (the default), while the order's partition is written to.

    The owner applies a change to its cache only once the changelog has it, so when the owner
    answers version v from its cache, the changelog's end is past v's change. A lookup sent
    to the standby after that answer arrives later still: with the bound 0, a standby
    answer must then be v or newer; a standby that is behind must forward instead.
    """
    workers = await start_workers(start_worker, ["a", "b"])
    owners = await settled_assignment(http, workers)
    uid = "standby-versioned"
    partition = partition_of(uid.encode(), PARTITIONS)
    owner, standby = owner_and_standby(owners, workers, partition)
    topic = pipeline_env["KAFKA_TOPIC"]
    noise = [
        o
        for o in random_orders(113, 12_000)
        if partition_of(o.order_uid.encode(), PARTITIONS) == partition
    ]

    def version(n: int) -> bytes:
        return encode_order(
            order_from_dict(order_dict({"order_uid": uid, "delivery.city": f"City {n}"}))
        )

    await producer.send_and_wait(topic, version(0), key=uid.encode())
    await eventually(
        lambda: served_from(http, owner, uid, "cache"), timeout=60, what="version 0 cached"
    )

    versions = 300

    async def write() -> None:
        """New versions of the order, with other orders of its partition in between."""
        per_version = len(noise) // versions
        for n in range(1, versions + 1):
            await producer.send(topic, version(n), key=uid.encode())
            for other in noise[(n - 1) * per_version : n * per_version]:
                await producer.send(topic, encode_order(other), key=other.order_uid.encode())
            await asyncio.sleep(0.01)
        await producer.flush()

    checks: list[tuple[int, Answer]] = []  # (owner's version just before, standby's answer)
    writing = asyncio.create_task(write())
    try:
        while not writing.done():
            asked_owner = await ask(http, owner, uid)
            if (asked_owner.status, asked_owner.source, asked_owner.served_by) != (
                200,
                "cache",
                owner.url,
            ):
                continue
            checks.append((city_version(asked_owner.body), await ask(http, standby, uid)))
        await writing
    finally:
        writing.cancel()

    assert all(answer.status == 200 for _, answer in checks), checks[:5]
    from_standby = [(v, a) for v, a in checks if a.source == "cache-standby"]
    forwarded = [(v, a) for v, a in checks if a.served_by == owner.url]
    older = [(v, city_version(a.body)) for v, a in from_standby if city_version(a.body) < v]
    assert not older, f"standby answers older than the owner's before them: {older[:5]}"
    assert all(a.served_by == standby.url for _, a in from_standby)
    assert len(from_standby) + len(forwarded) == len(checks), [a.source for _, a in checks]
    print(
        f"\n[scale] standby reads while the partition is written to: {len(checks)} lookups "
        f"of the standby, {len(from_standby)} answered from its copy (none older than the "
        f"owner's answer just before), {len(forwarded)} forwarded to the owner"
    )
    assert from_standby, "no lookup was answered from the standby copy"
    # Once the owner has cached the last version, the standby catches up and answers it.
    newest = version(versions)

    async def answers_newest(worker: Worker, source: str) -> bool:
        return await served_from(http, worker, uid, source) == newest

    await eventually(lambda: answers_newest(owner, "cache"), timeout=60, what="the last version")
    await eventually(
        lambda: answers_newest(standby, "cache-standby"), timeout=60, what="the standby's copy"
    )


async def test_a_standby_further_behind_than_the_bound_forwards_until_it_catches_up(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    """A burst of 40,000 changes lands in the changelog at once: the lookup that follows
    finds the standby copy far beyond STANDBY_READ_MAX_LAG behind, and is forwarded."""
    workers = await start_workers(start_worker, ["a", "b"], STANDBY_READ_MAX_LAG="100")
    owners = await settled_assignment(http, workers)
    # Enough orders that each partition's standby has applied some (it applies every 101).
    orders = list(random_orders(127, 2000))
    for each in orders:
        await producer.send(
            pipeline_env["KAFKA_TOPIC"], encode_order(each), key=each.order_uid.encode()
        )
    await producer.flush()
    await wait_stored(pipeline_env["PG_URL"], {o.order_uid for o in orders}, timeout=120)
    order = orders[0]  # among the first changes of its partition: applied by the standby
    uid = order.order_uid
    partition = partition_of(uid.encode(), PARTITIONS)
    owner, standby = owner_and_standby(owners, workers, partition)
    await eventually(
        lambda: served_from(http, standby, uid, "cache-standby"),
        timeout=60,
        what="a standby answer",
    )

    # Deletions of keys no order has, in one record batch: the broker's end jumps by 40,000
    # at once, and the standby applies them one by one (its buffer is the bound + 1).
    changelog = f"{pipeline_env['KAFKA_GROUP_ID']}-order-cache-changelog"
    burst = AIOKafkaProducer(
        bootstrap_servers=pipeline_env["KAFKA_BROKERS"], max_batch_size=900_000, acks="all"
    )
    await burst.start()
    try:
        batch = burst.create_batch()
        count = 0
        while batch.append(key=f"absent-{count}".encode(), value=None, timestamp=None):
            count += 1
            if count == 40_000:
                break
        await (await burst.send_batch(batch, changelog, partition=partition))
    finally:
        await burst.stop()
    assert count == 40_000

    behind = await ask(http, standby, uid)
    assert (behind.status, behind.source, behind.served_by) == (200, "cache", owner.url)
    body = await eventually(
        lambda: served_from(http, standby, uid, "cache-standby"),
        timeout=60,
        what="the standby caught up and answering again",
    )
    assert body == encode_order(order)
