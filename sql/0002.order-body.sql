-- Each order's wire JSON (the HTTP body) kept beside its rows, written in the same statement:
-- a lookup with ?nocache=1 and the cache warm-up read one row by key instead of joining four
-- tables and building the document. Nullable and not backfilled: an order stored before this
-- migration (or by another writer) is still served, its body built from its rows (repo.py),
-- until it is stored again. (PostgreSQL would build the JSON spaced out, not byte for byte
-- the wire format, so it cannot fill the column itself.)
ALTER TABLE orders ADD COLUMN IF NOT EXISTS body text;
