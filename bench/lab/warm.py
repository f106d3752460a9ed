"""A warm group: a consumer group whose cache holds the dataset, for every part that needs one.

It is made once per run by a cold warm-up (a worker with an empty cache, on an empty orders
topic, fills the cache from a database holding the dataset), which is what the restart part
times. Later workers of the group restart with the cache full: on the warm-up's RocksDB files,
or replaying the changelog with the memory store. Filling a cache of 100,000 orders takes
minutes, so it is done once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .worker import BenchWorker

if TYPE_CHECKING:
    from . import Dataset, Lab

ROCKSDB = "rocksdb://"
SAMPLE = 50  # lookups that must come from the cache after a restart


class WarmGroup:
    def __init__(self, lab: Lab, dataset: Dataset, settings: dict[str, str]) -> None:
        self.lab = lab
        self.dataset = dataset
        self.settings = settings  # with the RocksDB store and the warm-up's data dir
        self.cold: dict[str, Any] = {}
        self._restarts: dict[str, dict[str, Any]] = {}

    @classmethod
    async def create(
        cls, lab: Lab, dataset: Dataset, partitions: int, batch_size: int
    ) -> WarmGroup:
        group = cls(
            lab,
            dataset,
            {
                "PG_URL": await lab.seeded_database(dataset, batch_size),
                "KAFKA_TOPIC": await lab.topic(partitions),
                "KAFKA_GROUP_ID": lab.name("group"),
                "KAFKA_PARTITIONS": str(partitions),
                "CACHE_STORE": ROCKSDB,
                "DATA_DIR": str(lab.path("data")),
                "CACHE_SIZE": str(dataset.n * partitions),
            },
        )  # room for all in every partition
        worker = lab.start_worker(**group.settings)
        ready_s = await worker.wait_ready()
        cached_s = await worker.wait_cached(dataset.n)
        group.cold = {
            "ready_s": ready_s,
            "cached_s": cached_s,
            "cached_from_ready_s": cached_s - ready_s,
            "orders_per_s": dataset.n / cached_s,
            "warm_up_sent": worker.warm_up_sent(),
            "stop_s": await lab.stop_worker(worker),
        }
        return group

    def start(self, store: str = ROCKSDB) -> BenchWorker:
        """A worker of the group; the memory store gets a data dir of its own and replays."""
        other = (
            {}
            if store == ROCKSDB
            else {"CACHE_STORE": store, "DATA_DIR": str(self.lab.path("data"))}
        )
        return self.lab.start_worker(**{**self.settings, **other})

    async def verified_ready(self, worker: BenchWorker) -> float:
        """Seconds to /ready, after which a sample of lookups must come from the cache."""
        ready_s = await worker.wait_ready()
        sources = await worker.sources(self.dataset.uids[:SAMPLE])
        if sources != {"cache"}:
            raise RuntimeError(
                f"a restarted worker answered from {sources}, not the cache:\n{worker.log_tail()}"
            )
        return ready_s

    async def restart(self, store: str, settle: float) -> dict[str, Any]:
        """Time a restart with this store to /ready and read its RSS; once per store and run."""
        if store not in self._restarts:
            worker = self.start(store)
            ready_s = await self.verified_ready(worker)
            await asyncio.sleep(settle)
            self._restarts[store] = {
                "ready_s": ready_s,
                "warm_up_sent": worker.warm_up_sent(),
                "rss_bytes": worker.rss(),
                "stop_s": await self.lab.stop_worker(worker),
            }
        return self._restarts[store]
