-- Orders and their parts, one table per part of the wire format (see shared/fixtures/model.json).
-- Idempotent (IF NOT EXISTS) so the Docker image's init script and yoyo can both apply it.

CREATE TABLE IF NOT EXISTS orders (
    order_uid          text PRIMARY KEY,
    track_number       text NOT NULL,
    entry              text NOT NULL,
    locale             text NOT NULL,
    internal_signature text NOT NULL,
    customer_id        text NOT NULL,
    delivery_service   text NOT NULL,
    shardkey           text NOT NULL,
    sm_id              bigint NOT NULL,
    date_created       timestamptz NOT NULL,
    oof_shard          text NOT NULL,
    stored_at          timestamptz NOT NULL DEFAULT now()
);

-- "Most recent orders" (cache warm-up) reads newest first.
CREATE INDEX IF NOT EXISTS orders_date_created_idx ON orders (date_created DESC);

CREATE TABLE IF NOT EXISTS deliveries (
    order_uid text PRIMARY KEY REFERENCES orders (order_uid) ON DELETE CASCADE,
    name      text NOT NULL,
    phone     text NOT NULL,
    zip       text NOT NULL,
    city      text NOT NULL,
    address   text NOT NULL,
    region    text NOT NULL,
    email     text NOT NULL
);

CREATE TABLE IF NOT EXISTS payments (
    order_uid     text PRIMARY KEY REFERENCES orders (order_uid) ON DELETE CASCADE,
    transaction   text NOT NULL,
    request_id    text NOT NULL,
    currency      text NOT NULL,
    provider      text NOT NULL,
    amount        bigint NOT NULL,
    payment_dt    bigint NOT NULL,
    bank          text NOT NULL,
    delivery_cost bigint NOT NULL,
    goods_total   bigint NOT NULL,
    custom_fee    bigint NOT NULL
);

-- position keeps the items in the order they arrived; chrt_id may repeat within an order.
CREATE TABLE IF NOT EXISTS items (
    order_uid    text NOT NULL REFERENCES orders (order_uid) ON DELETE CASCADE,
    position     integer NOT NULL,
    chrt_id      bigint NOT NULL,
    track_number text NOT NULL,
    price        bigint NOT NULL,
    rid          text NOT NULL,
    name         text NOT NULL,
    sale         integer NOT NULL,
    size         text NOT NULL,
    total_price  bigint NOT NULL,
    nm_id        bigint NOT NULL,
    brand        text NOT NULL,
    status       integer NOT NULL,
    PRIMARY KEY (order_uid, position)
);
