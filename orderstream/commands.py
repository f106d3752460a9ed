"""CLI commands of the app: `migrate` the schema, `produce` random orders, `dlq` list/replay."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, NoReturn

import click
from faust.cli import AppCommand, argument, option

from . import dead_letters, tracing
from .migrations import migrate_database
from .order import encode_order, random_orders

if TYPE_CHECKING:
    from .app import OrderApp


def register(app: OrderApp) -> None:
    """Declare the commands on ``app`` (`faust -A orderstream migrate|produce|dlq`)."""
    settings = app.settings

    @app.command(option("--down", is_flag=True, default=False, help="Roll back every migration."))
    async def migrate(self: AppCommand, down: bool) -> None:
        """Apply the SQL migrations in sql/ to PG_URL (or roll them back with --down)."""
        done = await asyncio.to_thread(
            migrate_database, settings.pg_url, settings.sql_dir, down=down
        )
        verb = "rolled back" if down else "applied"
        self.say(f"{verb} {len(done)} migration(s): {', '.join(done) or 'none pending'}")

    @app.command(
        option("-n", "--count", type=int, default=10, show_default=True, help="Orders to publish."),
        option(
            "--interval",
            type=float,
            default=0.0,
            show_default=True,
            help="Seconds to wait between orders.",
        ),
        option("--seed", type=int, default=None, help="Seed for reproducible orders."),
    )
    async def produce(self: AppCommand, count: int, interval: float, seed: int | None) -> None:
        """Publish random valid orders to KAFKA_TOPIC, keyed by order_uid, printing their ids."""
        pending = []
        topic = app.orders_topic.get_topic_name()
        # With tracing on, one trace: a span for the run, one per message (its traceparent
        # goes in the message's headers).
        with tracing.step("produce", orders=count):
            for order in random_orders(seed, count):
                with tracing.producing(topic, order.order_uid) as headers:
                    pending.append(
                        await app.orders_topic.send(
                            key=order.order_uid.encode(), value=encode_order(order), headers=headers
                        )
                    )
                self.say(order.order_uid)
                if interval:
                    await asyncio.sleep(interval)
            await asyncio.gather(*pending)
        await app.producer.stop()

    @app.command(
        argument("action", type=click.Choice(["list", "replay"])),
        option(
            "--reason",
            default=None,
            help="Only letters of this x-error-reason (replay: every letter of it).",
        ),
        option(
            "--limit",
            type=click.IntRange(1, dead_letters.LIST_LIMIT_MAX),
            default=20,
            show_default=True,
            help="list: how many of the newest letters.",
        ),
        option(
            "--json",
            "as_json",
            is_flag=True,
            default=False,
            help="list: the letters as JSON, as GET /api/dead-letters gives them.",
        ),
        option(
            "--offset",
            "offsets",
            multiple=True,
            metavar="P:O",
            help="replay: the letter at partition P, offset O (repeatable).",
        ),
        option(
            "--all",
            "every",
            is_flag=True,
            default=False,
            help="replay: every letter (of --reason, if given).",
        ),
        option(
            "--dry-run",
            is_flag=True,
            default=False,
            help="replay: print what would be replayed, publish nothing.",
        ),
    )
    async def dlq(
        self: AppCommand,
        action: str,
        reason: str | None,
        limit: int,
        as_json: bool,
        offsets: tuple[str, ...],
        every: bool,
        dry_run: bool,
    ) -> None:
        """List the dead-letter topic's newest letters, or replay chosen ones to their source
        topic (`dlq list [--reason R] [--limit N] [--json]`, `dlq replay [--offset P:O ...]
        [--reason R] [--all] [--dry-run]`)."""
        try:
            if action == "list":
                if offsets or every or dry_run:
                    raise click.UsageError("--offset, --all and --dry-run are options of replay")
                listing = await dead_letters.list_letters(settings, limit, reason)
                if as_json:
                    self.say(json.dumps(dead_letters.listing_json(listing), ensure_ascii=False))
                    return
                self.say(
                    f"{listing.topic}: {listing.total} dead letter(s), the newest "
                    f"{len(listing.letters)}"
                    + (f" of reason {reason}" if reason else "")
                    + " first"
                )
                for letter in listing.letters:
                    self.say(dead_letters.letter_line(letter))
                return
            if as_json:
                raise click.UsageError("--json is an option of list")
            selection = dead_letters.Selection(dead_letters.parse_offsets(offsets), every, reason)
            replay = await dead_letters.replay_letters(settings, selection, dry_run=dry_run)
        except (dead_letters.DeadLetterError, dead_letters.KafkaUnavailable) as exc:
            fail(self, f"dlq {action}: {dead_letters.error_text(exc)}")
        except click.UsageError as exc:
            fail(self, f"dlq {action}: {exc.format_message()}", code=2)
        for line in dead_letters.replay_summary(replay):
            self.say(line)


def fail(command: AppCommand, message: str, code: int = 1) -> NoReturn:
    """End a command with ``message`` on stderr and exit status ``code``, without a traceback
    (an exception escaping a command is logged by Faust's worker with one)."""
    click.echo(message, err=True)  # not say(): --quiet must not hide why it failed
    raise SystemExit(code)
