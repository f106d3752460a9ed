"""The order model: wire format round trip, every validation rule, and the generator (pure)."""

import json
import pickle
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from orderstream.order import validation
from orderstream.order.generator import random_order, random_orders
from orderstream.order.records import (
    ORDER_UID_MAX_LENGTH,
    Delivery,
    InvalidOrder,
    Item,
    Order,
    Payment,
    decode_order,
    decode_order_and_body,
    encode_order,
    is_valid_order_uid,
    order_from_dict,
    order_to_dict,
)

OrderDict = Callable[..., dict[str, Any]]
NOW = datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC)


def key_order(value: Any) -> Any:
    """Every object's keys, in order, all the way down."""
    if isinstance(value, dict):
        return [(key, key_order(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [key_order(item) for item in value]
    return None


def rejection(data: object) -> InvalidOrder:
    with pytest.raises(InvalidOrder) as caught:
        order_from_dict(data)
    return caught.value


def paths(exc: InvalidOrder) -> list[str]:
    return [error.split(": ", 1)[0] for error in exc.errors]


# --- wire format ---------------------------------------------------------------------------------


def test_model_json_round_trips_with_same_values_and_key_order(model_json: bytes) -> None:
    encoded = encode_order(decode_order(model_json))

    assert json.loads(encoded) == json.loads(model_json)
    assert key_order(json.loads(encoded)) == key_order(json.loads(model_json))
    assert encoded == orjson.dumps(orjson.loads(model_json))  # compact, byte for byte


def test_decoded_order_has_records_and_an_aware_utc_datetime(model_json: bytes) -> None:
    order = decode_order(model_json)

    assert isinstance(order.delivery, Delivery) and isinstance(order.payment, Payment)
    assert [type(item) for item in order.items] == [Item]
    assert order.date_created == datetime(2021, 11, 26, 6, 22, 19, tzinfo=UTC)
    assert order.payment.amount == 1817 and order.items[0].brand == "Vivienne Sabo"


def test_records_declare_fields_in_model_json_order(model_json: bytes) -> None:
    model = json.loads(model_json)

    assert list(Order._options.fields) == list(model)
    assert list(Delivery._options.fields) == list(model["delivery"])
    assert list(Payment._options.fields) == list(model["payment"])
    assert list(Item._options.fields) == list(model["items"][0])


def test_validation_tables_name_the_record_fields() -> None:
    nested = {"delivery", "payment", "items"}
    assert [f[0] for f in validation.ORDER_FIELDS] == [
        f for f in Order._options.fields if f not in nested
    ]
    assert [f[0] for f in validation.DELIVERY_FIELDS] == list(Delivery._options.fields)
    assert [f[0] for f in validation.PAYMENT_FIELDS] == list(Payment._options.fields)
    assert [f[0] for f in validation.ITEM_FIELDS] == list(Item._options.fields)


def test_records_carry_no_faust_metadata(model_json: bytes) -> None:
    order = decode_order(model_json)

    assert "__faust" not in order.to_representation()
    assert b"__faust" not in encode_order(order)


def test_decoded_records_equal_records_built_by_faust_init(order_dict: OrderDict) -> None:
    """order_from_dict skips Record.__init__ for speed; it must leave the same state behind."""
    data = order_dict()
    built = Order(
        **{
            **data,
            "delivery": Delivery(**data["delivery"]),
            "payment": Payment(**data["payment"]),
            "items": [Item(**item) for item in data["items"]],
            "date_created": datetime(2021, 11, 26, 6, 22, 19, tzinfo=UTC),
        }
    )
    decoded = order_from_dict(data)

    assert decoded == built
    assert vars(decoded) == vars(built)
    assert vars(decoded.delivery) == vars(built.delivery)
    assert vars(decoded.payment) == vars(built.payment)
    assert vars(decoded.items[0]) == vars(built.items[0])


@pytest.mark.parametrize(
    ("sent", "returned"),
    [
        ("2021-11-26T06:22:19Z", "2021-11-26T06:22:19Z"),
        ("2021-11-26T06:22:19.123456Z", "2021-11-26T06:22:19.123456Z"),
        ("2021-11-26T06:22:19.123456789Z", "2021-11-26T06:22:19.123456Z"),  # Go's RFC3339Nano
        ("2021-11-26T09:22:19+03:00", "2021-11-26T06:22:19Z"),  # same instant, normalised to UTC
        ("2021-11-26T06:22:19+00:00", "2021-11-26T06:22:19Z"),  # as PostgreSQL's JSON spells it
    ],
)
def test_date_created_is_encoded_in_utc(order_dict: OrderDict, sent: str, returned: str) -> None:
    order = order_from_dict(order_dict({"date_created": sent}))

    assert order_to_dict(order)["date_created"] == returned


@pytest.mark.parametrize(
    "sent",
    [
        "2021-11-26T06:22:19Z",
        "2021-11-26T06:22:19.000001Z",
        "2021-11-26T06:22:19.123456789Z",
        "2021-11-26T09:22:19+03:00",
        "0001-01-01T03:00:00+03:00",
    ],
)
@pytest.mark.parametrize("extra", [{}, {"extra": 1, "delivery.extra": "x", "items[0].extra": []}])
def test_decoding_with_body_gives_what_decoding_then_encoding_gives(
    order_dict: OrderDict, sent: str, extra: dict[str, Any]
) -> None:
    raw = orjson.dumps(order_dict({"date_created": sent, **extra}))

    order, body = decode_order_and_body(raw)

    assert order == decode_order(raw)
    assert body == encode_order(decode_order(raw))


def test_generated_orders_decode_with_the_body_they_were_sent_as() -> None:
    for order in random_orders(seed=11, n=300, now=NOW):
        raw = encode_order(order)
        assert decode_order_and_body(raw) == (order, raw)


def test_decoding_with_body_rejects_what_decoding_rejects(order_dict: OrderDict) -> None:
    raw = orjson.dumps(order_dict({"payment.amount": "1"}))
    with pytest.raises(InvalidOrder) as caught:
        decode_order_and_body(raw)
    with pytest.raises(InvalidOrder) as expected:
        decode_order(raw)
    assert (caught.value.reason, caught.value.errors) == (
        expected.value.reason,
        expected.value.errors,
    )


def test_encoding_a_naive_datetime_is_refused(model_json: bytes) -> None:
    order = decode_order(model_json)
    order.date_created = datetime(2021, 11, 26, 6, 22, 19)

    with pytest.raises(ValueError, match="timezone-aware"):
        encode_order(order)


@pytest.mark.parametrize("path", ["extra", "delivery.extra", "payment.extra", "items[0].extra"])
def test_unknown_fields_are_ignored_and_not_encoded(
    order_dict: OrderDict, model_json: bytes, path: str
) -> None:
    order = order_from_dict(order_dict({path: {"nested": [1, 2.5, None]}}))

    assert encode_order(order) == orjson.dumps(orjson.loads(model_json))
    assert "extra" not in vars(order) and "extra" not in vars(order.items[0])


# --- reasons -------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe", b'{"a": NaN}', None])
def test_bytes_that_are_not_json_are_not_json(raw: bytes) -> None:
    with pytest.raises(InvalidOrder) as caught:
        decode_order(raw)

    assert caught.value.reason == "not_json"
    assert paths(caught.value) == ["order"]


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"[]", "array"),
        (b'"order"', "string"),
        (b"42", "integer"),
        (b"null", "null"),
        (b"true", "boolean"),
    ],
)
def test_json_that_is_not_an_object_is_not_an_order(raw: bytes, kind: str) -> None:
    with pytest.raises(InvalidOrder) as caught:
        decode_order(raw)

    assert caught.value.reason == "not_an_order"
    assert caught.value.errors == [f"order: expected object, got {kind}"]


@pytest.mark.parametrize(
    ("overrides", "drop", "path"),
    [
        ({}, ["order_uid"], "order_uid"),
        ({}, ["delivery"], "delivery"),
        ({}, ["delivery.email"], "delivery.email"),
        ({}, ["payment.currency"], "payment.currency"),
        ({}, ["items"], "items"),
        ({}, ["items[0].nm_id"], "items[0].nm_id"),
        ({}, ["date_created"], "date_created"),
        ({"delivery": []}, [], "delivery"),
        ({"payment": "paid"}, [], "payment"),
        ({"items": {"0": {}}}, [], "items"),
        ({"items": [None]}, [], "items[0]"),
        ({"order_uid": 123}, [], "order_uid"),
        ({"sm_id": None}, [], "sm_id"),
        ({"payment.amount": "1817"}, [], "payment.amount"),
        ({"payment.amount": 1817.0}, [], "payment.amount"),
        ({"items[0].size": 0}, [], "items[0].size"),
        ({"date_created": 1637907739}, [], "date_created"),
    ],
)
def test_missing_fields_and_wrong_json_types_are_not_an_order(
    order_dict: OrderDict, overrides: dict[str, Any], drop: list[str], path: str
) -> None:
    exc = rejection(order_dict(overrides, drop=drop))

    assert exc.reason == "not_an_order"
    assert path in paths(exc)


@pytest.mark.parametrize("path", ["sm_id", "payment.amount", "items[0].sale", "items[0].status"])
@pytest.mark.parametrize("flag", [True, False])
def test_a_boolean_is_not_an_integer(order_dict: OrderDict, path: str, flag: bool) -> None:
    exc = rejection(order_dict({path: flag}))

    assert exc.reason == "not_an_order"
    assert f"{path}: expected integer, got boolean" in exc.errors


def test_integers_beyond_64_bits_decode_as_numbers_and_are_not_an_order(model_json: bytes) -> None:
    raw = model_json.replace(b'"sm_id": 99', b'"sm_id": 18446744073709551616')

    with pytest.raises(InvalidOrder) as caught:
        decode_order(raw)

    assert caught.value.reason == "not_an_order"
    assert caught.value.errors == ["sm_id: expected integer, got number"]


# --- business rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("order_uid", ""),
        ("order_uid", "b563feb7 b2b84b6test"),
        ("order_uid", "b563feb7/b2b84b6test"),
        ("order_uid", "ünïcode"),
        ("order_uid", "x" * (ORDER_UID_MAX_LENGTH + 1)),
        ("payment.amount", -1),
        ("payment.payment_dt", -1),
        ("payment.delivery_cost", -1),
        ("payment.goods_total", -1),
        ("payment.custom_fee", -1),
        ("items[0].price", -1),
        ("items[0].total_price", -1),
        ("items[0].sale", -1),
        ("items[0].sale", 101),
        ("payment.currency", "usd"),
        ("payment.currency", "US"),
        ("payment.currency", "USDT"),
        ("payment.currency", ""),
        ("items[0].track_number", "WBILMOTHERTRACK"),
        ("delivery.email", ""),
        ("delivery.email", "test.gmail.com"),
        ("delivery.email", "test@gmail"),
        ("delivery.email", "te st@gmail.com"),
        ("delivery.email", "test@gmail.com\n"),
        ("delivery.phone", ""),
        ("delivery.phone", "12345"),
        ("delivery.phone", "+1234567890123456"),
        ("delivery.phone", "+972-000-0000"),
        ("delivery.phone", "+9720000000\n"),
        ("date_created", "2021-11-26T06:22:19"),  # naive
        ("date_created", "2021-11-26"),  # naive
        ("date_created", "yesterday"),
        ("date_created", "2021-13-01T00:00:00Z"),
        ("date_created", ""),
        ("delivery.name", "x" * (validation.MAX_STRING_LENGTH + 1)),
        ("items[0].brand", "x" * (validation.MAX_STRING_LENGTH + 1)),
        ("internal_signature", "x" * (validation.MAX_STRING_LENGTH + 1)),
        ("items[0].chrt_id", 2**63),
        ("sm_id", -(2**63) - 1),
        ("items[0].status", 2**31),  # an integer column, not bigint
        ("items[0].status", -(2**31) - 1),
        ("delivery.city", "Kiryat\x00Mozkin"),  # PostgreSQL text cannot hold NUL
        ("items[0].rid", "\x00"),
    ],
)
def test_each_broken_rule_is_invalid_and_names_its_field(
    order_dict: OrderDict, path: str, value: Any
) -> None:
    exc = rejection(order_dict({path: value}))

    assert exc.reason == "invalid"
    assert path in paths(exc)


def test_strings_at_the_length_limit_and_int64_bounds_are_accepted(order_dict: OrderDict) -> None:
    longest = "x" * validation.MAX_STRING_LENGTH
    order = order_from_dict(
        order_dict(
            {
                "delivery.name": longest,
                "items[0].chrt_id": 2**63 - 1,
                "sm_id": -(2**63),
                "items[0].status": 2**31 - 1,
                "order_uid": "A_z-9" * 12 + "abcd",
            }
        )
    )

    assert order.delivery.name == longest and order.items[0].chrt_id == 2**63 - 1
    assert order.items[0].status == 2**31 - 1


def test_negative_amount_has_a_field_message(order_dict: OrderDict) -> None:
    exc = rejection(order_dict({"payment.amount": -1}))

    assert exc.errors == ["payment.amount: must be a non-negative integer"]  # no sum check on it


def test_an_order_needs_at_least_one_item(order_dict: OrderDict) -> None:
    exc = rejection(order_dict({"items": []}))

    assert exc.reason == "invalid"
    assert exc.errors == ["items: must contain at least one item"]


def test_an_order_has_at_most_1000_items(order_dict: OrderDict) -> None:
    data = order_dict()
    exc = rejection({**data, "items": data["items"] * (validation.MAX_ITEMS + 1)})

    assert exc.errors == [f"items: must contain at most {validation.MAX_ITEMS} items, got 1001"]


def test_item_total_price_follows_price_and_sale(order_dict: OrderDict) -> None:
    exc = rejection(order_dict({"items[0].total_price": 300}))

    assert exc.reason == "invalid"
    # The wrong item total is not a valid part, so goods_total is not checked against it.
    assert exc.errors == ["items[0].total_price: expected 317 (price 453 with sale 30%), got 300"]


def test_goods_total_is_the_sum_of_item_totals(order_dict: OrderDict) -> None:
    data = order_dict()
    second = {**data["items"][0], "price": 100, "sale": 0, "total_price": 100}
    exc = rejection({**data, "items": [data["items"][0], second]})

    assert exc.errors == ["payment.goods_total: expected 417 (sum of items.total_price), got 317"]


def test_amount_is_goods_total_plus_delivery_cost_plus_custom_fee(order_dict: OrderDict) -> None:
    exc = rejection(order_dict({"payment.custom_fee": 10}))

    assert exc.errors == [
        "payment.amount: expected 1827 "
        "(goods_total 317 + delivery_cost 1500 + custom_fee 10), got 1817"
    ]


def test_sums_are_not_checked_when_a_part_is_itself_wrong(order_dict: OrderDict) -> None:
    exc = rejection(order_dict({"payment.delivery_cost": "1500", "payment.amount": 1}))

    assert exc.errors == ["payment.delivery_cost: expected integer, got string"]


def test_every_problem_is_reported_at_once(order_dict: OrderDict) -> None:
    exc = rejection(
        order_dict(
            {
                "delivery.email": "nope",
                "payment.currency": "usd",
                "items[0].sale": 101,
                "date_created": "2021-11-26T06:22:19",
            }
        )
    )

    assert exc.reason == "invalid"
    assert sorted(paths(exc)) == [
        "date_created",
        "delivery.email",
        "items[0].sale",
        "payment.currency",
    ]
    assert str(exc) == "invalid: " + "; ".join(exc.errors)


def test_a_wrong_type_beside_a_broken_rule_makes_it_not_an_order(order_dict: OrderDict) -> None:
    exc = rejection(order_dict({"delivery.email": "nope"}, drop=["payment.bank"]))

    assert exc.reason == "not_an_order"
    assert paths(exc) == ["delivery.email", "payment.bank"]


def test_invalid_order_survives_pickling(order_dict: OrderDict) -> None:
    exc = rejection(order_dict({"payment.amount": -1}))
    copy = pickle.loads(pickle.dumps(exc))

    assert (copy.reason, copy.errors, str(copy)) == (exc.reason, exc.errors, str(exc))


@pytest.mark.parametrize(
    ("uid", "valid"),
    [
        ("b563feb7b2b84b6test", True),
        ("A-Z_a-z_0-9", True),
        ("x", True),
        ("x" * ORDER_UID_MAX_LENGTH, True),
        ("x" * (ORDER_UID_MAX_LENGTH + 1), False),
        ("", False),
        ("has space", False),
        ("slash/uid", False),
        ("dot.uid", False),
        ("uid\n", False),
        ("ünïcode", False),
        ("١٢٣", False),  # Arabic-Indic digits are not [0-9]
    ],
)
def test_is_valid_order_uid(uid: str, valid: bool) -> None:
    assert is_valid_order_uid(uid) is valid


# --- generator -----------------------------------------------------------------------------------


def test_generated_orders_are_valid_and_round_trip() -> None:
    item_counts = set()
    for order in random_orders(seed=2024, n=500, now=NOW):
        assert order_from_dict(order_to_dict(order)) == order
        assert decode_order(encode_order(order)) == order
        item_counts.add(len(order.items))

    assert item_counts == {1, 2, 3, 4, 5}


def test_generated_orders_look_like_the_model() -> None:
    for order in random_orders(seed=7, n=50, now=NOW):
        assert 19 <= len(order.order_uid) <= 20 and order.order_uid.islower()
        assert order.track_number.startswith("WBIL")
        assert NOW - timedelta(days=1) <= order.date_created <= NOW
        assert order.date_created.tzinfo is UTC


def test_same_seed_gives_same_orders() -> None:
    first = [order_to_dict(o) for o in random_orders(seed=42, n=20, now=NOW)]

    assert first == [order_to_dict(o) for o in random_orders(seed=42, n=20, now=NOW)]
    assert first != [order_to_dict(o) for o in random_orders(seed=43, n=20, now=NOW)]


def test_random_order_refuses_a_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        random_order(random.Random(1), now=datetime(2024, 5, 17))


def test_an_order_from_the_future_is_invalid_only_when_a_latest_date_is_given(
    order_dict: OrderDict,
) -> None:
    latest = datetime(2021, 11, 26, 6, 0, 0, tzinfo=UTC)  # model.json: 06:22:19Z
    with pytest.raises(InvalidOrder) as caught:
        decode_order_and_body(orjson.dumps(order_dict()), latest=latest)
    assert caught.value.reason == "invalid"
    assert caught.value.errors == [
        "date_created: lies in the future: 1339 s past this worker's clock plus MAX_CLOCK_SKEW"
    ]
    # On the read path (no latest) and up to the latest date itself, it is valid.
    decode_order_and_body(orjson.dumps(order_dict()))
    decode_order_and_body(orjson.dumps(order_dict()), latest=latest + timedelta(seconds=1339))


def test_the_root_model_json_is_the_shared_canonical_order(model_json: bytes) -> None:
    """README's commands send ./model.json: it is the shared fixture, byte for byte."""
    root_copy = Path(__file__).resolve().parents[2] / "model.json"
    assert root_copy.read_bytes() == model_json
