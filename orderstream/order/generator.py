"""Realistic random orders for producing test traffic; pure (the caller owns the randomness).

Every order satisfies the rules in ``validation.py``: one ``track_number`` throughout, item totals
after sale, ``goods_total`` and ``amount`` summed as the validator sums them.
"""

import random
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from orderstream.order.records import Delivery, Item, Order, Payment

FIRST_NAMES = (
    "Ivan",
    "Anna",
    "Dmitry",
    "Olga",
    "Sergey",
    "Maria",
    "Alexey",
    "Elena",
    "Test",
    "Noa",
)
LAST_NAMES = ("Ivanov", "Petrova", "Smirnov", "Kuznetsova", "Popov", "Volkova", "Testov", "Levi")
PLACES = (  # (city, region, zip length, phone country code)
    ("Moscow", "Moscow", 6, "7"),
    ("Kazan", "Tatarstan", 6, "7"),
    ("Almaty", "Almaty", 6, "7"),
    ("Minsk", "Minsk", 6, "375"),
    ("Kiryat Mozkin", "Kraiot", 7, "972"),
    ("Yerevan", "Yerevan", 4, "374"),
)
STREETS = ("Ploshad Mira", "Lenina", "Tverskaya", "Sadovaya", "Pushkina", "Gagarina", "Nevsky")
EMAIL_DOMAINS = ("gmail.com", "yandex.ru", "mail.ru", "example.com")
CURRENCIES = ("USD", "EUR", "RUB", "KZT", "BYN")
PROVIDERS = ("wbpay", "applepay", "googlepay", "sbp")
BANKS = ("alpha", "sber", "tinkoff", "vtb", "gazprom")
PRODUCTS = (  # (name, brand, price range in minor units)
    ("Mascaras", "Vivienne Sabo", (200, 900)),
    ("Lipstick", "Maybelline", (300, 1500)),
    ("T-shirt", "Befree", (500, 2500)),
    ("Sneakers", "Nike", (4000, 15000)),
    ("Backpack", "Xiaomi", (1500, 6000)),
    ("Phone case", "Baseus", (150, 1200)),
    ("Jeans", "Levi's", (3000, 9000)),
    ("Headphones", "JBL", (2000, 12000)),
)
SIZES = ("0", "XS", "S", "M", "L", "XL", "38", "42")
SALES = (0, 0, 5, 10, 15, 20, 25, 30, 50)
STATUSES = (200, 201, 202, 203)
DELIVERY_SERVICES = ("meest", "cdek", "boxberry", "dhl")
LOCALES = ("en", "ru")
HEX = "0123456789abcdef"


def _text(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choices(alphabet, k=length))


def _delivery(rng: random.Random) -> Delivery:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    city, region, zip_length, country = rng.choice(PLACES)
    return Delivery(
        name=f"{first} {last}",
        phone=f"+{country}{_text(rng, string.digits, 10 - len(country) + rng.randint(0, 1))}",
        zip=_text(rng, string.digits, zip_length),
        city=city,
        address=f"{rng.choice(STREETS)} {rng.randint(1, 120)}",
        region=region,
        email=f"{first.lower()}.{last.lower()}{rng.randint(1, 999)}@{rng.choice(EMAIL_DOMAINS)}",
    )


def _item(rng: random.Random, track_number: str) -> Item:
    name, brand, (low, high) = rng.choice(PRODUCTS)
    price, sale = rng.randint(low, high), rng.choice(SALES)
    return Item(
        chrt_id=rng.randint(1_000_000, 9_999_999),
        track_number=track_number,
        price=price,
        rid=_text(rng, HEX, 17) + _text(rng, string.ascii_lowercase, 4),
        name=name,
        sale=sale,
        size=rng.choice(SIZES),
        total_price=price * (100 - sale) // 100,  # the validator's rounding: down
        nm_id=rng.randint(1_000_000, 9_999_999),
        brand=brand,
        status=rng.choice(STATUSES),
    )


def random_order(rng: random.Random, *, now: datetime | None = None) -> Order:
    """One valid order created within the day before ``now`` (default: the current UTC time)."""
    now = datetime.now(UTC) if now is None else now
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    created = now.astimezone(UTC).replace(microsecond=0) - timedelta(seconds=rng.randrange(86_400))
    order_uid = _text(rng, HEX, rng.choice((15, 16))) + _text(rng, string.ascii_lowercase, 4)
    track_number = "WBIL" + _text(rng, string.ascii_uppercase, 10)
    items = [_item(rng, track_number) for _ in range(rng.randint(1, 5))]
    goods_total = sum(item.total_price for item in items)
    delivery_cost = rng.choice((0, 500, 1000, 1500))
    custom_fee = rng.choice((0, 0, 0, 100, 250))
    payment = Payment(
        transaction=order_uid,
        request_id="",
        currency=rng.choice(CURRENCIES),
        provider=rng.choice(PROVIDERS),
        amount=goods_total + delivery_cost + custom_fee,
        payment_dt=max(0, int(created.timestamp()) - rng.randrange(120)),  # paid just before
        bank=rng.choice(BANKS),
        delivery_cost=delivery_cost,
        goods_total=goods_total,
        custom_fee=custom_fee,
    )
    return Order(
        order_uid=order_uid,
        track_number=track_number,
        entry="WBIL",
        delivery=_delivery(rng),
        payment=payment,
        items=items,
        locale=rng.choice(LOCALES),
        internal_signature="",
        customer_id=_text(rng, string.ascii_lowercase, rng.randint(4, 10)),
        delivery_service=rng.choice(DELIVERY_SERVICES),
        shardkey=str(rng.randrange(10)),
        sm_id=rng.randint(1, 999),
        date_created=created,
        oof_shard=str(rng.randint(1, 9)),
    )


def random_orders(seed: int | None, n: int, *, now: datetime | None = None) -> Iterator[Order]:
    """``n`` orders from one seeded generator; the same seed and ``now`` give the same orders."""
    rng = random.Random(seed)
    now = datetime.now(UTC) if now is None else now  # one clock reading for the batch
    for _ in range(n):
        yield random_order(rng, now=now)
