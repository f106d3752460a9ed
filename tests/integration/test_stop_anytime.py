"""SIGTERM at any moment of start-up ends the worker with its documented status, no crash.

A worker on a new consumer group over a filled database recovers its table, warms its cache
from PostgreSQL, then consumes: each point gets a SIGTERM as soon as the log shows it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from harness import Worker
from orderstream.order.generator import random_orders
from orderstream.repo import OrderRepository

ORDERS_IN_DATABASE = 20_000
# Log lines of start-up, in order; the worker is stopped as soon as one appears.
START_UP_POINTS = [
    "[^-OrderApp]: Starting...",  # creating topics, opening connections
    "[^---Recovery]: Starting...",  # table recovery
    "Revoking previously assigned partitions",  # the first rebalance
    "Cache warm-up: loading",  # reading PostgreSQL
    "Cache warm-up: sending",  # sending to the cache
    "recent orders sent to this worker's partitions",  # warm-up sent, consuming
]


@pytest.fixture
async def filled_database(clean_database: str) -> str:
    repo = OrderRepository(clean_database)
    await repo.connect()
    try:
        orders = list(random_orders(61, ORDERS_IN_DATABASE))
        for start in range(0, len(orders), 2000):
            await repo.upsert_many(orders[start : start + 2000])
    finally:
        await repo.close()
    return clean_database


async def wait_for_line(worker: Worker, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log():
        assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{worker.log_tail()}"
        await asyncio.sleep(0.01)


async def test_sigterm_at_each_point_of_start_up_exits_cleanly(
    pipeline_env: dict[str, str], filled_database: str, tmp_path: Path
) -> None:
    outcomes = {}
    for index, point in enumerate(START_UP_POINTS):
        env = {
            **pipeline_env,
            "PG_URL": filled_database,
            "KAFKA_GROUP_ID": f"{pipeline_env['KAFKA_GROUP_ID']}-{index}",
            "DATA_DIR": str(tmp_path / f"data-{index}"),
        }
        worker = Worker(env, log_path=tmp_path / f"worker-{index}.log").start()
        assert worker.process is not None
        try:
            await wait_for_line(worker, point)
            worker.process.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(worker.process.wait, 60)
        finally:
            worker.kill()
        log = worker.log()
        outcomes[point] = (status, "crash" in log or "Traceback" in log)
    assert outcomes == {point: (0, False) for point in START_UP_POINTS}, outcomes
