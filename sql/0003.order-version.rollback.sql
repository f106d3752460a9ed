-- Undo 0003: orders are written whatever their version.
ALTER TABLE orders DROP COLUMN IF EXISTS kafka_offset;
