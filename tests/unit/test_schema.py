"""One declaration of the order schema (order/validation.py's field tables), checked everywhere
it is restated: the Records, the tables of sql/, the generated SQL and openapi.yaml."""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import REPO_ROOT
from orderstream import order_sql
from orderstream.order import Delivery, Item, Order, Payment, validation
from orderstream.order.validation import (
    DELIVERY_FIELDS,
    ITEM_FIELDS,
    NESTED,
    ORDER_FIELDS,
    PAYMENT_FIELDS,
    Field,
    column_type,
)

OBJECTS: dict[str, tuple[type, Sequence[Field], str]] = {  # record, fields, SQL table
    "Delivery": (Delivery, DELIVERY_FIELDS, "deliveries"),
    "Payment": (Payment, PAYMENT_FIELDS, "payments"),
    "Item": (Item, ITEM_FIELDS, "items"),
}
RECORD_OF_NESTED = {"delivery": Delivery, "payment": Payment, "items": list[Item]}


def scalar_type(field: Field) -> type:
    return datetime if column_type(field) == "timestamptz" else field[1]


def test_the_records_declare_the_schemas_fields_types_and_nesting() -> None:
    hints = typing.get_type_hints(Order)
    scalars = {field[0]: field for field in ORDER_FIELDS}
    assert set(Order._options.fields) == set(scalars) | set(NESTED)
    for name, annotation in hints.items():
        if name in NESTED:
            assert annotation == RECORD_OF_NESTED[name], name
        elif name in scalars:
            assert annotation is scalar_type(scalars[name]), name
    for record, fields, _ in OBJECTS.values():
        record_hints = typing.get_type_hints(record)
        assert list(record._options.fields) == [field[0] for field in fields]
        assert all(record_hints[field[0]] is scalar_type(field) for field in fields)
    assert NESTED["items"][1] is ITEM_FIELDS and NESTED["delivery"][1] is DELIVERY_FIELDS


def migrated_columns() -> dict[str, dict[str, str]]:
    """table -> column -> type, from the CREATE TABLE and ADD COLUMN statements of sql/."""
    tables: dict[str, dict[str, str]] = {}
    for path in sorted((REPO_ROOT / "sql").glob("[0-9]*.sql")):
        if path.name.endswith(".rollback.sql"):
            continue
        text = path.read_text()
        for table, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", text, re.S):
            for line in body.splitlines():
                match = re.match(r"\s+(\w+)\s+(\w+)", line)
                if match and match.group(1) != "PRIMARY":
                    tables.setdefault(table, {})[match.group(1)] = match.group(2)
        for table, column, kind in re.findall(
            r"ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+) (\w+)", text
        ):
            tables.setdefault(table, {})[column] = kind
    return tables


def same_type(sql: str, declared: str) -> bool:
    return sql == declared or {sql, declared} == {"integer", "int"}


def test_the_migrated_tables_have_a_column_of_the_declared_type_for_every_field() -> None:
    tables = migrated_columns()
    service_columns = {
        "orders": {"body", "kafka_offset", "stored_at"},
        "items": {"order_uid", "position"},
        "deliveries": {"order_uid"},
        "payments": {"order_uid"},
    }
    expected = {"orders": ORDER_FIELDS, **{table: fields for _, fields, table in OBJECTS.values()}}
    for table, fields in expected.items():
        columns = tables[table]
        assert set(columns) - service_columns[table] - {"order_uid"} == {
            field[0] for field in fields
        } - {"order_uid"}, table
        for field in fields:
            assert same_type(columns[field[0]], column_type(field)), (table, field[0])


def test_the_generated_sql_names_every_field() -> None:
    for fields in (ORDER_FIELDS, DELIVERY_FIELDS, PAYMENT_FIELDS, ITEM_FIELDS):
        for name, _, _ in fields:
            assert f"'{name}'," in order_sql.ORDER_DOCUMENT, name
            assert f"{name} = EXCLUDED.{name}" in order_sql.UPSERT_BATCH or name == "order_uid"
    assert (
        "sale int" in order_sql.UPSERT_BATCH
        and "date_created timestamptz" in order_sql.UPSERT_BATCH
    )


# What each rule of the declaration says in openapi.yaml.
RULE_CONSTRAINTS: dict[Any, dict[str, Any]] = {
    None: {},
    validation._non_negative: {"minimum": 0},
    validation._percent: {"minimum": 0, "maximum": 100},
    validation._int32: {"format": "int32"},
    validation._timestamp: {"format": "date-time"},
    validation._order_uid: {"pattern": f"^[A-Za-z0-9_-]{{1,{validation.ORDER_UID_MAX_LENGTH}}}$"},
    validation._phone: {"pattern": r"^\+?[0-9]{6,15}$"},
    validation._email: {"pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$"},
    validation._currency: {"pattern": "^[A-Z]{3}$"},
}


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    spec = yaml.safe_load((REPO_ROOT / "openapi.yaml").read_text())
    return spec["components"]["schemas"]


def resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = {
            **schemas[schema["$ref"].rsplit("/", 1)[1]],
            **{k: v for k, v in schema.items() if k != "$ref"},
        }
    return schema


def check_object(
    name: str,
    fields: Sequence[Field],
    schemas: dict[str, Any],
    nested: dict[str, str] | None = None,
) -> None:
    schema = schemas[name]
    assert schema["additionalProperties"] is False, name
    properties = schema["properties"]
    scalars = {field[0]: field for field in fields}
    names = list(Order._options.fields) if name == "Order" else [field[0] for field in fields]
    assert list(properties) == names, name
    assert schema["required"] == names, name
    for key, field in scalars.items():
        prop = resolve(properties[key], schemas)
        _, kind, rule = field
        assert prop["type"] == {str: "string", int: "integer"}[kind], (name, key)
        constraints = RULE_CONSTRAINTS[rule]
        assert {k: prop.get(k) for k in constraints} == constraints, (name, key)
        if kind is str and "pattern" not in constraints and "format" not in constraints:
            assert prop["maxLength"] == validation.MAX_STRING_LENGTH, (name, key)
        if kind is int and "format" not in constraints and "maximum" not in constraints:
            assert prop["format"] == "int64", (name, key)
    for key, target in (nested or {}).items():
        prop = properties[key]
        ref = prop["items"]["$ref"] if prop.get("type") == "array" else prop["$ref"]
        assert ref.endswith("/" + target), (name, key)


def test_openapis_order_schema_is_the_declared_one(schemas: dict[str, Any]) -> None:
    check_object(
        "Order",
        ORDER_FIELDS,
        schemas,
        {"delivery": "Delivery", "payment": "Payment", "items": "Item"},
    )
    items = schemas["Order"]["properties"]["items"]
    assert (items["minItems"], items["maxItems"]) == (1, validation.MAX_ITEMS)
    for name, (_, fields, _) in OBJECTS.items():
        check_object(name, fields, schemas)


def test_a_drift_is_caught(schemas: dict[str, Any]) -> None:
    """The check fails on a field the schema has and the spec lacks."""
    drifted = (*DELIVERY_FIELDS, ("floor", str, None))
    with pytest.raises(AssertionError):
        check_object("Delivery", drifted, schemas)


def test_repo_uses_the_generated_statements() -> None:
    from orderstream import repo

    assert repo.UPSERT_BATCH is order_sql.UPSERT_BATCH
    assert order_sql.ORDER_DOCUMENT in repo.GET_ORDER
    assert Path(order_sql.__file__).name == "order_sql.py"
