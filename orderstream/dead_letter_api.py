"""HTTP: GET /api/dead-letters (the newest letters) and POST /api/dead-letters/replay.

The same code as `faust -A orderstream dlq list|replay` (dead_letters.py); a replay publishes
with the worker's own producer. Letters carry orders, so with API_TOKENS set both need a
token, as the order lookup does. One request at a time reads the topic: each opens a Kafka
consumer of its own, and two replays at once could publish one letter twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web as aioweb

from . import auth, dead_letters
from .cache.routing import AUTHORIZATION
from .dead_letters import DeadLetterError, KafkaUnavailable, Selection

if TYPE_CHECKING:
    from .app import OrderApp

logger = logging.getLogger(__name__)

LIST_ROUTE = "/api/dead-letters"
REPLAY_ROUTE = "/api/dead-letters/replay"
DEFAULT_LIMIT = 50
REPLAY_FIELDS = frozenset({"offsets", "all", "reason", "dry_run"})
MAX_OFFSETS = 500


def json_response(body: Any, status: int = 200) -> aioweb.Response:
    return aioweb.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def refusal(message: str, status: int = 400, offsets: list[str] | None = None) -> aioweb.Response:
    body: dict[str, Any] = {"error": message}
    if offsets:
        body["offsets"] = offsets
    return json_response(body, status)


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= dead_letters.LIST_LIMIT_MAX:
        raise DeadLetterError(f"limit must be an integer from 1 to {dead_letters.LIST_LIMIT_MAX}")
    return int(raw)


def parse_replay(body: Any) -> tuple[Selection, bool]:
    """A replay request's body as a Selection and dry_run; DeadLetterError when malformed."""
    if not isinstance(body, dict):
        raise DeadLetterError(
            'expected a JSON object: {"offsets": ["0:7"]} or {"all": true, "reason": "invalid"}'
        )
    unknown = sorted(set(body) - REPLAY_FIELDS)
    if unknown:
        raise DeadLetterError(f"unknown fields: {', '.join(map(repr, unknown))[:300]}")
    offsets = body.get("offsets", [])
    if (
        not isinstance(offsets, list)
        or ("offsets" in body and not offsets)
        or len(offsets) > MAX_OFFSETS
        or not all(isinstance(o, str) for o in offsets)
    ):
        raise DeadLetterError(
            f'offsets must be a list of 1 to {MAX_OFFSETS} strings PARTITION:OFFSET, e.g. ["0:7"]'
        )
    every, dry_run, reason = body.get("all", False), body.get("dry_run", False), body.get("reason")
    if not isinstance(every, bool) or not isinstance(dry_run, bool):
        raise DeadLetterError("all and dry_run must be true or false")
    if reason is not None and not isinstance(reason, str):
        raise DeadLetterError("reason must be a string")
    return Selection(dead_letters.parse_offsets(offsets), every, reason), dry_run


class DeadLetterApi:
    """The two handlers, with the worker's settings, tokens and producer."""

    def __init__(self, app: OrderApp) -> None:
        self.app = app
        self.api_tokens = auth.BearerTokens(app.settings.api_tokens)
        self.busy = asyncio.Lock()

    def refused(self, request: aioweb.Request) -> aioweb.Response | None:
        authorization = request.headers.get(AUTHORIZATION)
        if self.api_tokens.enabled and not self.api_tokens.allows(authorization):
            return auth.unauthorized(authorization)
        return None

    async def list_letters(self, request: aioweb.Request) -> aioweb.Response:
        """The newest letters (of ``reason``), newest first, and the topic's size."""
        denied = self.refused(request)
        if denied is not None:
            return denied
        try:
            limit = parse_limit(request.query.get("limit"))
            async with self.busy:
                listing = await dead_letters.list_letters(
                    self.app.settings, limit, request.query.get("reason")
                )
        except DeadLetterError as exc:
            return refusal(str(exc))
        except KafkaUnavailable as exc:
            return self.kafka_unavailable(exc)
        return json_response(dead_letters.listing_json(listing))

    async def replay(self, request: aioweb.Request) -> aioweb.Response:
        """Replay the letters the JSON body names; 404 names offsets that hold none."""
        denied = self.refused(request)
        if denied is not None:
            return denied
        if request.content_type != "application/json":
            return refusal("send the request as Content-Type: application/json", 415)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return refusal("the body is not JSON")
        try:
            selection, dry_run = parse_replay(body)
            async with self.busy:
                replay = await dead_letters.replay_letters(
                    self.app.settings, selection, dry_run=dry_run, producer=self.app.batch_producer
                )
        except DeadLetterError as exc:
            return refusal(str(exc), exc.status, exc.details.get("offsets"))
        except KafkaUnavailable as exc:
            return self.kafka_unavailable(exc)
        for item in replay.replayed:
            logger.info(
                "Replayed dead letter %s to %s:%s:%s%s",
                item.letter.position,
                item.topic,
                item.partition,
                item.offset,
                " (dry run)" if replay.dry_run else "",
            )
        return json_response(dead_letters.replay_json(replay))

    @staticmethod
    def kafka_unavailable(exc: KafkaUnavailable) -> aioweb.Response:
        # The reason names the brokers: for the operator's log, not for the client.
        logger.warning("Dead-letter request failed: %s", exc)
        return refusal("kafka unavailable", 503)


def register(app: OrderApp, router: aioweb.UrlDispatcher) -> None:
    """Add the two routes to the worker's web server."""
    api = DeadLetterApi(app)
    router.add_get(LIST_ROUTE, api.list_letters)
    router.add_post(REPLAY_ROUTE, api.replay)
