"""CLI commands of the app: `migrate` the schema and `produce` random orders."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from faust.cli import AppCommand, option

from .migrations import migrate_database
from .order import encode_order, random_orders

if TYPE_CHECKING:
    from .app import OrderApp


def register(app: OrderApp) -> None:
    """Declare the commands on ``app`` (`faust -A orderstream migrate|produce`)."""
    settings = app.settings

    @app.command(option("--down", is_flag=True, default=False, help="Roll back every migration."))
    async def migrate(self: AppCommand, down: bool) -> None:
        """Apply the SQL migrations in sql/ to PG_URL (or roll them back with --down)."""
        done = await asyncio.to_thread(
            migrate_database, settings.pg_url, settings.sql_dir, down=down)
        verb = "rolled back" if down else "applied"
        self.say(f"{verb} {len(done)} migration(s): {', '.join(done) or 'none pending'}")

    @app.command(
        option("-n", "--count", type=int, default=10, show_default=True, help="Orders to publish."),
        option("--interval", type=float, default=0.0, show_default=True,
               help="Seconds to wait between orders."),
        option("--seed", type=int, default=None, help="Seed for reproducible orders."),
    )
    async def produce(self: AppCommand, count: int, interval: float, seed: int | None) -> None:
        """Publish random valid orders to KAFKA_TOPIC, keyed by order_uid, printing their ids."""
        pending = []
        for order in random_orders(seed, count):
            pending.append(await app.orders_topic.send(
                key=order.order_uid.encode(), value=encode_order(order)))
            self.say(order.order_uid)
            if interval:
                await asyncio.sleep(interval)
        await asyncio.gather(*pending)
        await app.producer.stop()
