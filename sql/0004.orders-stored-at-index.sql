-- transactional: false
-- "Recently stored orders" (GET /api/orders/recent, the operator page) reads the newest by
-- stored_at, which every upsert sets: an index, so it reads a page of it rather than the table.
-- Built CONCURRENTLY (outside a transaction, hence the directive above) so a worker can go on
-- storing orders while it is built on a large table. order_uid breaks the ties of one batch,
-- whose orders share their transaction's stored_at.
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_stored_at_idx ON orders (stored_at DESC, order_uid DESC);
