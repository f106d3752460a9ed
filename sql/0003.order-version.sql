-- The version of each stored order: the offset of the message it came from, on the order's own
-- partition of the orders topic (every message of one order_uid lands there). A batch writes an
-- order only when its version is not older than the stored one, so a late write (a stalled
-- worker that lost its partitions, a replay) never replaces a newer copy. NULL: unknown (stored
-- before this migration or by another writer), and any version replaces it.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS kafka_offset bigint;
