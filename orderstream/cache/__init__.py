"""Everything the recent-order cache is, in one place.

- ``policy``: RecentOrders, the Table's bound (newest CACHE_SIZE orders, per partition) and
  the lookups of a known partition.
- ``updates``: stored orders sent to the cache agent in bundles, the agent's step, and the
  warm-up of an empty cache from PostgreSQL.
- ``bundle``: the cache-updates message format (a version byte, then frames).
- ``entry``: a Table value, the order's JSON body after the version it was stored with.
- ``changelog``: a partition's changes produced to the changelog as record batches.
- ``store``: the one adapter touching Faust's private store internals (RocksDB options,
  self-healing partitions, a partition's changes and changelog offset in one WriteBatch).
- ``routing``: which worker owns a lookup's partition, and forwarding the lookup to it.

The Table itself is declared in orderstream/tables.py and the agents in orderstream/agents.py.
"""

from .changelog import ChangelogWriter
from .policy import RecentOrders
from .store import store_url, table_options

__all__ = ["ChangelogWriter", "RecentOrders", "store_url", "table_options"]
