"""Bearer tokens: who may read orders (API_TOKENS) and metrics (METRICS_TOKEN).

A request carries ``Authorization: Bearer <token>``. The token is compared with every
configured token in constant time (``hmac.compare_digest``, no early exit on the first match),
so neither the time of an answer nor which token matched tells an attacker how close a guess
was. Tokens are never logged: the 401 answer and the log say only that a token was missing or
refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterable

import orjson
from aiohttp import web

logger = logging.getLogger(__name__)

# RFC 6750: what a client without a valid token is told to send.
CHALLENGE = 'Bearer realm="orderstream"'
INVALID_CHALLENGE = 'Bearer realm="orderstream", error="invalid_token"'


class BearerTokens:
    """A set of accepted bearer tokens; empty means every request is allowed."""

    __slots__ = ("_tokens", "enabled")

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(token.encode() for token in tokens if token)
        self.enabled = bool(self._tokens)

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries one of the tokens."""
        if not self.enabled:
            return True
        if not authorization:
            return False
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # surrogatepass: a header aiohttp decoded with escapes still compares (never equal).
        given = credential.strip().encode("utf-8", "surrogatepass")
        matched = False
        for token in self._tokens:  # every token, always: the time does not depend on which
            matched |= hmac.compare_digest(given, token)
        return matched


def unauthorized(authorization: str | None) -> web.Response:
    """401 JSON with ``WWW-Authenticate: Bearer``; says whether a token was sent, not which."""
    refused = bool(authorization)
    message = (
        "invalid token"
        if refused
        else "authentication required: send Authorization: Bearer <token>"
    )
    return web.Response(
        status=401,
        body=orjson.dumps({"error": message}),
        content_type="application/json",
        headers={"WWW-Authenticate": INVALID_CHALLENGE if refused else CHALLENGE},
    )


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def warn_if_unprotected(host: str, port: int, api_tokens: BearerTokens) -> None:
    """One WARNING at start when orders are served without tokens on a non-loopback address."""
    if api_tokens.enabled or is_loopback(host):
        return
    logger.warning(
        "API_TOKENS is empty and the web server binds %s:%d: anyone who can reach this port "
        "reads customers' names, phones, e-mails and addresses at /order/{order_uid}. Set "
        "API_TOKENS, or bind HTTP_ADDR to 127.0.0.1 behind a proxy that authenticates",
        host,
        port,
    )
