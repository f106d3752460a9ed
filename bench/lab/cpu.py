"""CPU time of the processes a worker's ingest keeps busy: the worker, PostgreSQL and Kafka.

On a machine whose cores the three share, the sum of their CPU per order bounds what any of them
can reach: ingest's ceiling is cores / (CPU per order). Read from /proc, so PostgreSQL and Kafka
are counted only when they run on this machine (the local stack); the machine's busy time is
counted always (it includes whatever else runs).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (with its reaped children's when ``children``)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def pids(*pgrep_args: str) -> list[int]:
    found = subprocess.run(["pgrep", *pgrep_args], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def postgres_seconds() -> float:
    """Every PostgreSQL process's CPU, with exited backends' (the postmaster's children)."""
    total = 0.0
    for pid in pids("-x", "postgres"):
        try:
            total += process_seconds(pid, children=True)
        except FileNotFoundError:  # a backend that ended meanwhile: its parent counts it
            continue
    return total


def machine_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, over all cores."""
    values = [int(value) for value in open("/proc/stat").readline().split()[1:9]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICK, sum(values) / TICK


@dataclass
class CpuReading:
    worker: float
    postgres: float
    kafka: float | None
    busy: float
    total: float

    @classmethod
    def now(cls, worker_pid: int) -> CpuReading:
        kafka = pids("-f", "kafka.Kafka")
        busy, total = machine_seconds()
        return cls(
            process_seconds(worker_pid),
            postgres_seconds(),
            sum(process_seconds(pid) for pid in kafka) if kafka else None,
            busy,
            total,
        )

    def per_order_us(self, later: CpuReading, orders: int) -> dict[str, float | None]:
        """Microseconds of CPU per order of each, from this reading to ``later``."""

        def us(before: float | None, after: float | None) -> float | None:
            if before is None or after is None:
                return None
            return (after - before) / orders * 1e6

        return {
            "worker": us(self.worker, later.worker),
            "postgres": us(self.postgres, later.postgres),
            "kafka": us(self.kafka, later.kafka),
            "machine_busy": us(self.busy, later.busy),
            "machine_available": us(self.total, later.total),
        }
