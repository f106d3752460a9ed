"""Which worker owns a lookup's cache partition (orderstream/cache/routing.py Owners)."""

from __future__ import annotations

from typing import Any

from yarl import URL

from orderstream.cache.routing import Owners, is_same_worker

CHANGELOG = "order-svc-order-cache-changelog"


class Router:
    def __init__(self) -> None:
        self.distribution: dict[str, dict[str, list[int]]] = {}

    def tables_metadata(self) -> dict[str, dict[str, list[int]]]:
        return self.distribution


class Topic:
    def get_topic_name(self) -> str:
        return CHANGELOG


class Stand:
    """The app and table attributes Owners reads (Faust's router, conf and changelog)."""

    def __init__(self, canonical_url: str) -> None:
        self.router = Router()
        self.conf = self
        self.canonical_url = URL(canonical_url)
        self.changelog_topic = Topic()


def owners_for(me: str) -> tuple[Owners, Stand]:
    stand = Stand(me)
    app: Any = stand
    return Owners(app, app), stand


def test_partitions_of_other_workers_map_to_their_address_and_own_ones_to_none() -> None:
    owners, stand = owners_for("http://10.0.0.1:8081")
    stand.router.distribution = {
        "http://10.0.0.1:8081": {CHANGELOG: [0, 1]},
        "http://10.0.0.2:8081": {CHANGELOG: [2], "other-topic": [3]},
    }

    assert owners.other_than_self(0) is None and owners.other_than_self(1) is None
    assert owners.other_than_self(2) == URL("http://10.0.0.2:8081")
    assert owners.other_than_self(3) is None  # another topic's partition 3 is not the cache's


def test_a_new_assignment_replaces_the_map() -> None:
    owners, stand = owners_for("http://10.0.0.1:8081")
    stand.router.distribution = {"http://10.0.0.2:8081": {CHANGELOG: [0]}}
    assert owners.other_than_self(0) == URL("http://10.0.0.2:8081")

    stand.router.distribution = {"http://10.0.0.1:8081": {CHANGELOG: [0]}}  # a new object

    assert owners.other_than_self(0) is None


def test_the_same_worker_is_recognised_by_host_and_port_only() -> None:
    own = URL("http://10.0.0.1:8081")
    assert is_same_worker(URL("http://10.0.0.1:8081/"), own)
    assert not is_same_worker(URL("http://10.0.0.1:8082"), own)
