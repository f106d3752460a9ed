"""The SQL that takes a batch of orders apart and builds an order back, generated from the schema.

The order's fields are declared once, in order/validation.py's field tables; the statements
here are written from them, so a field added there reaches the batch upsert and the document
built from rows without another edit (the columns themselves come from a migration in sql/,
which tests/unit/test_schema.py checks against the same tables).
"""

from __future__ import annotations

from collections.abc import Sequence

from .order.records import Order
from .order.validation import (
    DELIVERY_FIELDS,
    ITEM_FIELDS,
    NESTED,
    ORDER_FIELDS,
    PAYMENT_FIELDS,
    Field,
    column_type,
)

# Wire key order = declaration order of the Records (checked against the field tables).
WIRE_KEYS = tuple(Order._options.fields)


def _names(fields: Sequence[Field], prefix: str = "") -> str:
    return ", ".join(prefix + name for name, _, _ in fields)


def _typed(fields: Sequence[Field]) -> str:
    """``name type, ...``: a json_to_record column definition list."""
    return ", ".join(f"{name} {column_type(field)}" for field in fields for name in field[:1])


def _updates(fields: Sequence[Field]) -> str:
    return ", ".join(f"{name} = EXCLUDED.{name}" for name, _, _ in fields)


def _upsert_one(table: str, key: str, alias: str, fields: Sequence[Field]) -> str:
    """Upsert the rows of the batch's ``key`` objects (one per order) into ``table``."""
    return f"""
    INSERT INTO {table} (order_uid, {_names(fields)})
    SELECT b.order_uid, {_names(fields, alias + ".")}
    FROM written b, json_to_record(b.{key}) AS {alias}({_typed(fields)})
    ON CONFLICT (order_uid) DO UPDATE SET
        {_updates(fields)}"""


def _order_record() -> str:
    """The order's wire keys with their types; the nested ones stay JSON for the next step."""
    scalar = {field[0]: field for field in ORDER_FIELDS}
    return ", ".join(
        f"{key} json" if key in NESTED else f"{key} {column_type(scalar[key])}" for key in WIRE_KEYS
    )


_ORDER_COLUMNS = ORDER_FIELDS  # orders: every scalar of the order, order_uid first
_OWN_COLUMNS = _ORDER_COLUMNS[1:]  # what an upsert of an order changes

# A batch is one statement over the orders' wire JSON as an array, and their versions. The
# server takes the JSON apart; the client sends the bodies it has already encoded (binding
# every column value of every order would cost this process more than the rest of storing
# it). Each body is kept, verbatim, in orders.body for lookups. An order stored again
# replaces the old copy unless the stored copy has a newer version (kafka_offset, sql/0003):
# its rows are updated and items past its new count deleted. The statement returns the
# order_uids it wrote. Every row of a batch is written in order_uid order (see
# repo.latest_per_uid).
UPSERT_BATCH = f"""
WITH batch AS MATERIALIZED (
    SELECT element.value::text AS body, versions.kafka_offset, o.*
    FROM json_array_elements($1::json) WITH ORDINALITY AS element(value, n)
    JOIN unnest($2::bigint[]) WITH ORDINALITY AS versions(kafka_offset, n)
        ON versions.n = element.n,
    json_to_record(element.value) AS o({_order_record()})
), upserted_orders AS (
    INSERT INTO orders ({_names(_ORDER_COLUMNS)}, body, kafka_offset)
    SELECT {_names(_ORDER_COLUMNS)}, body, kafka_offset
    FROM batch
    ON CONFLICT (order_uid) DO UPDATE SET
        body = EXCLUDED.body, kafka_offset = EXCLUDED.kafka_offset,
        {_updates(_OWN_COLUMNS)}, stored_at = now()
    WHERE orders.kafka_offset IS NULL OR EXCLUDED.kafka_offset IS NULL
       OR orders.kafka_offset <= EXCLUDED.kafka_offset
    RETURNING order_uid
), written AS MATERIALIZED (
    SELECT b.* FROM batch b JOIN upserted_orders USING (order_uid)
), upserted_deliveries AS ({_upsert_one("deliveries", "delivery", "d", DELIVERY_FIELDS)}
), upserted_payments AS ({_upsert_one("payments", "payment", "p", PAYMENT_FIELDS)}
), removed_items AS (
    DELETE FROM items i USING written b
    WHERE i.order_uid = b.order_uid AND i.position >= json_array_length(b.items)
), upserted_items AS (
    INSERT INTO items (order_uid, position, {_names(ITEM_FIELDS)})
    SELECT b.order_uid, i.n - 1, {_names(ITEM_FIELDS, "i.")}
    FROM written b, ROWS FROM (json_to_recordset(b.items) AS ({_typed(ITEM_FIELDS)}))
        WITH ORDINALITY AS i({_names(ITEM_FIELDS)}, n)
    ON CONFLICT (order_uid, position) DO UPDATE SET
        {_updates(ITEM_FIELDS)}
)
SELECT order_uid FROM upserted_orders
"""

# date_created spelt as encode_order spells it: UTC, "Z", microseconds when there are any.
_TIMESTAMP = """to_char(
        {column} AT TIME ZONE 'UTC', CASE WHEN date_trunc('second', {column})
        = {column} THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END)"""


def _pair(field: Field, alias: str) -> str:
    """``'name', alias.name``: a key of json_build_object and its column's value."""
    column = f"{alias}.{field[0]}"
    value = _TIMESTAMP.format(column=column) if column_type(field) == "timestamptz" else column
    return f"'{field[0]}', {value}"


def _object(fields: Sequence[Field], alias: str) -> str:
    """json_build_object of a row's columns, in wire order."""
    return "json_build_object(\n        " + ", ".join(_pair(f, alias) for f in fields) + ")"


def _order_document() -> str:
    scalar = {field[0]: field for field in ORDER_FIELDS}
    parts = []
    for key in WIRE_KEYS:
        if key == "delivery":
            parts.append(f"'delivery', {_object(DELIVERY_FIELDS, 'd')}")
        elif key == "payment":
            parts.append(f"'payment', {_object(PAYMENT_FIELDS, 'p')}")
        elif key == "items":
            parts.append(
                f"'items', (SELECT json_agg({_object(ITEM_FIELDS, 'i')} ORDER BY "
                "i.position)\n        FROM items i WHERE i.order_uid = o.order_uid)"
            )
        else:
            parts.append(_pair(scalar[key], "o"))
    return (
        "(\nSELECT json_build_object(\n    " + ",\n    ".join(parts) + ")::text\n"
        "FROM deliveries d, payments p\n"
        "WHERE d.order_uid = o.order_uid AND p.order_uid = o.order_uid)"
    )


# An order's wire JSON built from its rows, for an order stored without its body (before
# migration 0002, or by another writer): the wire format's key order.
ORDER_DOCUMENT = _order_document()
