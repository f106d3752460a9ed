-- transactional: false
-- Undo 0004: recent orders are then found by scanning the table.
DROP INDEX CONCURRENTLY IF EXISTS orders_stored_at_idx;
