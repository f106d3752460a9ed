"""The order itself, pure: Records, wire format, validation, partitioning and sample orders.

Nothing here imports the Faust app or the settings, so the core imports, and its tests run,
without an environment, Kafka or PostgreSQL.

- ``records``: the Records and the JSON wire format (decode, encode).
- ``validation``: the rules a message must pass, every problem reported at once.
- ``partitioning``: which partition an order_uid belongs to (Kafka's default partitioner).
- ``generator``: realistic random orders for demo and test traffic.
"""

from .generator import random_order, random_orders
from .partitioning import partition_of
from .records import (
    ORDER_UID_MAX_LENGTH,
    Delivery,
    InvalidOrder,
    Item,
    Order,
    Payment,
    decode_order,
    decode_order_and_body,
    encode_order,
    format_timestamp,
    is_valid_order_uid,
    order_from_dict,
    order_to_dict,
)

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
    "partition_of",
    "random_order",
    "random_orders",
]
