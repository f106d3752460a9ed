"""The order as faust Records, and its JSON wire format; pure, no I/O.

``model.json`` is the contract: the field names, nesting, types and key order of these Records are
the ``orders`` topic's message format and the body of ``GET /order/{order_uid}``.

- Decoding is strict (see ``validation.py``): exact JSON types, business rules, every problem
  reported at once as an ``InvalidOrder``.
- Unknown fields, at any level, are ignored (tolerant reader: producers may add fields before
  consumers upgrade). They are not stored and not returned.
- ``date_created`` must carry a timezone; it is normalised to UTC on decoding and always encoded
  as UTC, ``2021-11-26T06:22:19Z`` (microseconds kept when present). A ``+03:00`` input therefore
  comes back as the same instant spelled in ``Z``.
- The Records carry no ``__faust`` metadata and use no faust coercion or validation: faust's
  coercion is lenient ("1" becomes 1) and its validation stops at the first error.
"""

from datetime import UTC, datetime
from typing import Any, TypeVar

import faust
import orjson

from orderstream.order.validation import (
    NOT_JSON,
    ORDER_UID_MAX_LENGTH,
    InvalidOrder,
    is_valid_order_uid,
    validate_order,
)

R = TypeVar("R", bound=faust.Record)

__all__ = [
    "Delivery",
    "Payment",
    "Item",
    "Order",
    "InvalidOrder",
    "ORDER_UID_MAX_LENGTH",
    "is_valid_order_uid",
    "decode_order",
    "decode_order_and_body",
    "order_from_dict",
    "order_to_dict",
    "encode_order",
    "format_timestamp",
]


class Delivery(faust.Record, include_metadata=False):
    """Who receives the order, and where."""

    name: str
    phone: str
    zip: str
    city: str
    address: str
    region: str
    email: str


class Payment(faust.Record, include_metadata=False):
    """How the order was paid; money in the currency's minor units."""

    transaction: str
    request_id: str
    currency: str
    provider: str
    amount: int
    payment_dt: int
    bank: str
    delivery_cost: int
    goods_total: int
    custom_fee: int


class Item(faust.Record, include_metadata=False):
    """One line of the order."""

    chrt_id: int
    track_number: str
    price: int
    rid: str
    name: str
    sale: int
    size: str
    total_price: int
    nm_id: int
    brand: str
    status: int


class Order(faust.Record, include_metadata=False):
    """An order as it travels on the topic; ``date_created`` is an aware datetime."""

    order_uid: str
    track_number: str
    entry: str
    delivery: Delivery
    payment: Payment
    items: list[Item]
    locale: str
    internal_signature: str
    customer_id: str
    delivery_service: str
    shardkey: str
    sm_id: int
    date_created: datetime
    oof_shard: str


# Wire key order = declaration order of the Records.
_ORDER_KEYS = tuple(Order._options.fields)
_DELIVERY_KEYS = tuple(Delivery._options.fields)
_PAYMENT_KEYS = tuple(Payment._options.fields)
_ITEM_KEYS = tuple(Item._options.fields)


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:  # also bad UTF-8, empty and None (tombstone) values
        raise InvalidOrder(NOT_JSON, [f"order: not valid JSON ({exc})"]) from None


def decode_order(raw: bytes) -> Order:
    """Parse one message value; raise InvalidOrder (``not_json`` when it is not JSON at all)."""
    return order_from_dict(_parse(raw))


def decode_order_and_body(raw: bytes, *, latest: datetime | None = None) -> tuple[Order, bytes]:
    """decode_order, and the order's wire JSON (what encode_order returns), in one pass.

    The body is encoded from the validated plain values, before they become Records:
    cheaper than encoding the Records, and the ingest path needs both. An order
    created after ``latest`` is invalid (see validate_order).
    """
    fields = validate_order(_parse(raw), latest=latest)
    body = orjson.dumps({key: fields[key] for key in _ORDER_KEYS}, option=orjson.OPT_UTC_Z)
    return _order_from_fields(fields), body


def _record(cls: type[R], fields: dict[str, Any]) -> R:
    """Build a Record from validated values without faust's per-field descriptor calls.

    ``Record.__init__`` sends every value through a descriptor (per field, more per order
    than validation costs) only to store it unchanged, since coercion is off. This does what
    that ``__init__`` ends up doing; test_models pins the equivalence.
    """
    record = cls.__new__(cls)
    record.__evaluated_fields__ = set()
    record.__dict__.update(fields)
    return record


def order_from_dict(data: object) -> Order:
    """Validate decoded JSON and build the Records; raise InvalidOrder listing every problem."""
    return _order_from_fields(validate_order(data))


def _order_from_fields(fields: dict[str, Any]) -> Order:
    fields["delivery"] = _record(Delivery, fields["delivery"])
    fields["payment"] = _record(Payment, fields["payment"])
    fields["items"] = [_record(Item, item) for item in fields["items"]]
    return _record(Order, fields)


def _plain(record: faust.Record, keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: getattr(record, key) for key in keys}


def format_timestamp(moment: datetime) -> str:
    """Render an aware datetime as RFC 3339 in UTC with a ``Z``; reject naive ones."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"date_created must be timezone-aware, got {moment!r}")
    return moment.astimezone(UTC).isoformat()[:-6] + "Z"  # drop "+00:00"


def order_to_dict(order: Order) -> dict[str, Any]:
    """Return the order as JSON-ready values, keys in wire order (``date_created`` a string)."""
    data = _plain(order, _ORDER_KEYS)
    # Re-assigning an existing key keeps its position, so the wire order survives.
    data["delivery"] = _plain(order.delivery, _DELIVERY_KEYS)
    data["payment"] = _plain(order.payment, _PAYMENT_KEYS)
    data["items"] = [_plain(item, _ITEM_KEYS) for item in order.items]
    data["date_created"] = format_timestamp(order.date_created)
    return data


def encode_order(order: Order) -> bytes:
    """Serialise the order to the wire format (and HTTP body): compact UTF-8 JSON."""
    return orjson.dumps(order_to_dict(order))
