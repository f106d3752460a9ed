"""The order schema, declared once, and the check of a decoded order against it; pure, no I/O.

The schema is a table per object (name, JSON type, optional rule) and NESTED, which says where
the objects sit in an order. Everything else that restates the fields is generated from these
tables or checked against them by a test that fails when they drift: the Records (records.py,
tests/unit/test_models.py), the SQL that takes a batch apart and builds an order back
(orderstream/order_sql.py, generated; its column types from column_type), the tables of sql/
and the order schema of openapi.yaml (tests/unit/test_schema.py).

One pass collects every problem, so a dead-lettered message says everything that is wrong with
it, not only the first thing. Unknown fields are ignored: producers may add fields before this
consumer upgrades.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

ORDER_UID_MAX_LENGTH = 64
MAX_ITEMS = 1000
MAX_STRING_LENGTH = 255  # our bound, not the database's (text): keeps rows and errors sane
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # bigint columns
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1  # integer columns (items.status)

# Reason codes of InvalidOrder, from "cannot even parse" to "parses but breaks a rule".
NOT_JSON = "not_json"
NOT_AN_ORDER = "not_an_order"
INVALID = "invalid"

_UID = re.compile(rf"[A-Za-z0-9_-]{{1,{ORDER_UID_MAX_LENGTH}}}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+?[0-9]{6,15}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
_MISSING = object()


class InvalidOrder(ValueError):
    """A message that is not a valid order; ``reason`` is a short code, ``errors`` name fields."""

    def __init__(self, reason: str, errors: Sequence[str]) -> None:
        self.reason = reason
        self.errors = list(errors)
        super().__init__(f"{reason}: {'; '.join(self.errors)}")

    def __reduce__(self) -> tuple[type[InvalidOrder], tuple[str, list[str]]]:
        return type(self), (self.reason, self.errors)


def is_valid_order_uid(uid: str) -> bool:
    """Whether ``uid`` can be an order id: 1-64 characters of ``[A-Za-z0-9_-]``."""
    return isinstance(uid, str) and _UID.fullmatch(uid) is not None


# Rules take a value of the right JSON type and return it (possibly converted) or raise
# ValueError with the text that follows "<path>: " in the error message.
Rule = Callable[[Any], Any]
Field = tuple[str, type[Any], Rule | None]


def _order_uid(value: str) -> str:
    if _UID.fullmatch(value) is None:
        raise ValueError(
            f"must be 1-{ORDER_UID_MAX_LENGTH} characters of A-Z, a-z, 0-9, '_' or '-'"
        )
    return value


def _non_negative(value: int) -> int:
    if value < 0:
        raise ValueError("must be a non-negative integer")
    return value


def _int32(value: int) -> int:
    if not INT32_MIN <= value <= INT32_MAX:
        raise ValueError("must fit in a signed 32-bit integer")
    return value


def _percent(value: int) -> int:
    if not 0 <= value <= 100:
        raise ValueError("must be a percentage between 0 and 100")
    return value


def _currency(value: str) -> str:
    if _CURRENCY.fullmatch(value) is None:
        raise ValueError(f"must be a 3-letter uppercase currency code, got {value!r}")
    return value


# Email and phone are personal data: the messages do not repeat them into logs.
def _email(value: str) -> str:
    if _EMAIL.fullmatch(value) is None:
        raise ValueError("must be an email address like name@example.com")
    return value


def _phone(value: str) -> str:
    if _PHONE.fullmatch(value) is None:
        raise ValueError("must be 6-15 digits with an optional leading '+'")
    return value


def _timestamp(value: str) -> datetime:
    """Parse ISO 8601 / RFC 3339 with an offset and normalise to UTC (one instant, one spelling)."""
    try:
        parsed = datetime.fromisoformat(value)  # 3.11: accepts "Z"; cuts nanoseconds to micro
    except ValueError:
        raise ValueError(f"must be an ISO 8601 timestamp with a timezone, got {value!r}") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"must include a timezone (e.g. 'Z' or '+03:00'), got {value!r}")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"is out of range in UTC, got {value!r}") from None


DELIVERY_FIELDS: tuple[Field, ...] = (
    ("name", str, None),
    ("phone", str, _phone),
    ("zip", str, None),
    ("city", str, None),
    ("address", str, None),
    ("region", str, None),
    ("email", str, _email),
)
PAYMENT_FIELDS: tuple[Field, ...] = (
    ("transaction", str, None),
    ("request_id", str, None),
    ("currency", str, _currency),
    ("provider", str, None),
    ("amount", int, _non_negative),
    ("payment_dt", int, _non_negative),
    ("bank", str, None),
    ("delivery_cost", int, _non_negative),
    ("goods_total", int, _non_negative),
    ("custom_fee", int, _non_negative),
)
ITEM_FIELDS: tuple[Field, ...] = (
    ("chrt_id", int, None),
    ("track_number", str, None),
    ("price", int, _non_negative),
    ("rid", str, None),
    ("name", str, None),
    ("sale", int, _percent),
    ("size", str, None),
    ("total_price", int, _non_negative),
    ("nm_id", int, None),
    ("brand", str, None),
    ("status", int, _int32),
)
# The order's own scalars; its nested delivery, payment and items are read by validate_order.
ORDER_FIELDS: tuple[Field, ...] = (
    ("order_uid", str, _order_uid),
    ("track_number", str, None),
    ("entry", str, None),
    ("locale", str, None),
    ("internal_signature", str, None),
    ("customer_id", str, None),
    ("delivery_service", str, None),
    ("shardkey", str, None),
    ("sm_id", int, None),
    ("date_created", str, _timestamp),
    ("oof_shard", str, None),
)


# Where the nested objects sit: the order's delivery and payment objects, and its items array.
NESTED: dict[str, tuple[str, tuple[Field, ...]]] = {
    "delivery": ("object", DELIVERY_FIELDS),
    "payment": ("object", PAYMENT_FIELDS),
    "items": ("array", ITEM_FIELDS),
}

# PostgreSQL's type for a value that passed a rule; otherwise its JSON type's (COLUMN_TYPES).
_RULE_COLUMN_TYPES: dict[Rule, str] = {_timestamp: "timestamptz", _int32: "int", _percent: "int"}
COLUMN_TYPES = {str: "text", int: "bigint"}


def column_type(field: Field) -> str:
    """The PostgreSQL type that holds every valid value of ``field``."""
    _, kind, rule = field
    return _RULE_COLUMN_TYPES.get(rule, COLUMN_TYPES[kind]) if rule else COLUMN_TYPES[kind]


class _Problems:
    """Collected messages; ``malformed`` once anything had the wrong shape or type."""

    __slots__ = ("messages", "malformed")

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.malformed = False

    def shape(self, path: str, text: str) -> None:
        self.malformed = True
        self.messages.append(f"{path}: {text}")

    def wrong_type(self, path: str, expected: str, value: object) -> None:
        self.shape(
            path,
            "missing" if value is _MISSING else f"expected {expected}, got {_json_type(value)}",
        )

    def rule(self, path: str, text: str) -> None:
        self.messages.append(f"{path}: {text}")


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _object(value: object, path: str, problems: _Problems) -> dict[str, Any] | None:
    if type(value) is dict:
        return value
    problems.wrong_type(path, "object", value)
    return None


def _read(
    data: dict[str, Any], prefix: str, spec: Sequence[Field], problems: _Problems
) -> dict[str, Any]:
    """Return the valid fields of ``data`` named in ``spec``, in spec order; report the others."""
    clean: dict[str, Any] = {}
    for name, kind, rule in spec:
        value = data.get(name, _MISSING)
        if type(value) is not kind:  # exact type: a JSON true is not the integer 1
            problems.wrong_type(prefix + name, _JSON_TYPES[kind], value)
            continue
        if kind is str:
            if len(value) > MAX_STRING_LENGTH:
                problems.rule(prefix + name, f"must be at most {MAX_STRING_LENGTH} characters")
                continue
            if "\x00" in value:  # PostgreSQL text cannot store it: the insert would fail forever
                problems.rule(prefix + name, "must not contain NUL characters")
                continue
        elif not INT64_MIN <= value <= INT64_MAX:
            problems.rule(prefix + name, "must fit in a signed 64-bit integer")
            continue
        if rule is not None:
            try:
                value = rule(value)
            except ValueError as exc:
                problems.rule(prefix + name, str(exc))
                continue
        clean[name] = value
    return clean


def _read_item(
    data: dict[str, Any], prefix: str, track_number: str | None, problems: _Problems
) -> dict[str, Any]:
    """Return the item's valid fields, checked against the order's track number and its sale."""
    item = _read(data, prefix, ITEM_FIELDS, problems)
    own_track = item.get("track_number")
    if track_number is not None and own_track is not None and own_track != track_number:
        problems.rule(
            prefix + "track_number",
            f"expected {track_number!r} (the order's track_number), got {own_track!r}",
        )
    if "price" in item and "sale" in item and "total_price" in item:
        price, sale, total = item["price"], item["sale"], item["total_price"]
        expected = price * (100 - sale) // 100
        if total != expected:
            problems.rule(
                prefix + "total_price",
                f"expected {expected} (price {price} with sale {sale}%), got {total}",
            )
            del item["total_price"]  # not a valid part of goods_total
    return item


def _read_items(
    value: object, track_number: str | None, problems: _Problems
) -> list[dict[str, Any]] | None:
    """Return every item's valid fields, or None when the list itself is unusable."""
    if type(value) is not list:
        problems.wrong_type("items", "array", value)
        return None
    if not value:
        problems.rule("items", "must contain at least one item")
        return None
    if len(value) > MAX_ITEMS:
        problems.rule("items", f"must contain at most {MAX_ITEMS} items, got {len(value)}")
        return None  # don't spend time (or error text) on each of a huge list
    items = []
    for index, raw in enumerate(value):
        prefix = f"items[{index}]"
        data = _object(raw, prefix, problems)
        items.append({} if data is None else _read_item(data, prefix + ".", track_number, problems))
    return items


def _check_totals(
    payment: dict[str, Any], items: list[dict[str, Any]] | None, problems: _Problems
) -> None:
    """Check the payment sums, each only when all of its parts are themselves valid."""
    goods_total = payment.get("goods_total")
    if (
        goods_total is not None
        and items is not None
        and all("total_price" in item for item in items)
    ):
        expected = sum(item["total_price"] for item in items)
        if goods_total != expected:
            problems.rule(
                "payment.goods_total",
                f"expected {expected} (sum of items.total_price), got {goods_total}",
            )
    parts = [payment.get(name) for name in ("goods_total", "delivery_cost", "custom_fee")]
    amount = payment.get("amount")
    if amount is not None and None not in parts:
        expected = sum(parts)
        if amount != expected:
            problems.rule(
                "payment.amount",
                f"expected {expected} (goods_total {parts[0]} + delivery_cost "
                f"{parts[1]} + custom_fee {parts[2]}), got {amount}",
            )


def _check_not_in_future(order: dict[str, Any], latest: datetime, problems: _Problems) -> None:
    """An order cannot have been created after now (plus the clock skew tolerated).

    Checked on ingest only: an order stored earlier stays readable whatever the clocks say.
    """
    created = order.get("date_created")
    if created is not None and created > latest:
        ahead = (created - latest).total_seconds()
        problems.rule(
            "date_created",
            f"lies in the future: {ahead:.0f} s past this worker's clock plus MAX_CLOCK_SKEW",
        )


def validate_order(data: object, *, latest: datetime | None = None) -> dict[str, Any]:
    """Return the order's known fields as plain values (``date_created`` a UTC datetime).

    Raises InvalidOrder with every problem found: reason ``not_an_order`` if anything has the
    wrong shape or JSON type, else ``invalid`` for broken business rules. With ``latest``,
    a ``date_created`` after it is such a broken rule.
    """
    problems = _Problems()
    if type(data) is not dict:
        raise InvalidOrder(NOT_AN_ORDER, [f"order: expected object, got {_json_type(data)}"])
    order = _read(data, "", ORDER_FIELDS, problems)
    if latest is not None:
        _check_not_in_future(order, latest, problems)
    delivery = _object(data.get("delivery", _MISSING), "delivery", problems)
    delivery = (
        _read(delivery, "delivery.", DELIVERY_FIELDS, problems) if delivery is not None else None
    )
    payment = _object(data.get("payment", _MISSING), "payment", problems)
    payment = _read(payment, "payment.", PAYMENT_FIELDS, problems) if payment is not None else None
    items = _read_items(data.get("items", _MISSING), order.get("track_number"), problems)
    if payment is not None:
        _check_totals(payment, items, problems)
    if problems.messages:
        raise InvalidOrder(NOT_AN_ORDER if problems.malformed else INVALID, problems.messages)
    order.update(delivery=delivery, payment=payment, items=items)
    return order
