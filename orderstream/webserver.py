"""The web server's limits: connections at once, header and idle timeouts, quiet 4xx errors.

Faust serves HTTP with aiohttp, which accepts every connection and waits for a request's
headers without a deadline (its maintainers leave limits to the application, aiohttp #675).
So this module swaps the runner of Faust's aiohttp driver for one whose server:

- serves at most ``HTTP_MAX_CONNECTIONS`` connections at once (never more than half the
  open-files limit, raised to its hard limit at start, so Kafka, PostgreSQL and RocksDB keep
  file descriptors); a connection over the cap gets a quick answer and is closed: ``/health``
  200 (the process is alive), ``/ready`` and everything else 503 JSON with ``Retry-After``.
  Of those, at most ``OVERFLOW_CONNECTIONS`` wait for their request at once: a new one
  makes the oldest answer (503) and close, so idle connections cannot keep /health from
  answering;
- closes a connection that has not sent a whole request's headers ``HTTP_HEADER_TIMEOUT``
  seconds after it opened (with a 408 JSON answer), and a kept-alive connection idle
  for ``HTTP_IDLE_TIMEOUT`` seconds (aiohttp's keepalive_timeout, which also ends a request
  half sent on a kept-alive connection);
- answers malformed requests with a 4xx JSON body and one WARNING line, truncated, instead of
  aiohttp's ERROR traceback that quotes the whole request line.

Every answer, aiohttp's and the raw ones above, carries SECURITY_HEADERS: a strict
Content-Security-Policy (same origin only, no inline script), nosniff, no framing, no referrer,
and a ``Server`` header without versions. aiohttp's answers get them from its
``on_response_prepare`` signal (one call per response, no middleware around the handlers).

aiohttp's hooks used here, pinned by tests/integration/test_hostile_http.py:
``AppRunner._make_server``, ``RequestHandler.handle_error`` and
``RequestHandler._request_count``; Faust's ``Web._runner`` and ``Web._transport_handlers`` (to
listen with a backlog as long as the cap).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from .config import Settings
from .security_headers import SECURITY_HEADERS, add_security_headers

logger = logging.getLogger(__name__)

# Connections over the cap waiting for their request at once; a new one answers the oldest.
OVERFLOW_CONNECTIONS = 100
# Longest an over-cap connection may take to send its request's headers.
OVERFLOW_HEADER_TIMEOUT = 2.0
# Longest request head read from an over-cap connection before answering anyway.
OVERFLOW_HEAD_BYTES = 16 * 1024
# aiohttp's listen backlog, the least used.
LISTEN_BACKLOG = 128
# How much of a malformed request (its line, a header) a log line or error body quotes.
QUOTED_CHARS = 200


def shorten(text: str, limit: int = QUOTED_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters, saying how long it was."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; return the soft limit.

    Many systems start services with a soft limit of 1024 and a far higher hard limit; each
    HTTP connection holds a file descriptor.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning(
                "Could not raise the open-files limit from %d to %d: %s", soft, target, exc
            )
    return soft


def connection_cap(configured: int, open_files_limit: int) -> int:
    """The cap actually used: at most half the open-files limit (warned once when lowered)."""
    cap = min(configured, max(1, open_files_limit // 2))
    if cap < configured:
        logger.warning(
            "HTTP_MAX_CONNECTIONS=%d lowered to %d: the open-files limit is %d and the worker "
            "keeps half of it for Kafka, PostgreSQL and RocksDB; raise `ulimit -n` to allow more",
            configured,
            cap,
            open_files_limit,
        )
    return cap


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int
    header_timeout: float
    idle_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            settings.http_max_connections, settings.http_header_timeout, settings.http_idle_timeout
        )


def json_error(status: int, message: str, **details: str) -> web.Response:
    # With the headers itself: a request the parser rejected gets no on_response_prepare.
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message, **details}),
        content_type="application/json",
        headers=SECURITY_HEADERS,
    )


def raw_response(status: str, body: bytes, *extra_headers: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for answers outside aiohttp."""
    lines = [
        f"HTTP/1.1 {status}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
        *extra_headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler with a header deadline and quiet, JSON 4xx answers."""

    def __init__(self, manager: LimitedServer, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limited_server = manager
        self._header_timeout = header_timeout
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._header_deadline = self._loop.call_later(self._header_timeout, self._headers_overdue)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        self._limited_server.release(self)
        super().connection_lost(exc)

    def _headers_overdue(self) -> None:
        """Close a connection whose first request's headers have not all arrived in time."""
        self._header_deadline = None
        if self._request_count or self.transport is None:
            return  # a request arrived: from now on aiohttp's keep-alive timeout applies
        self.transport.write(
            raw_response(
                "408 Request Timeout",
                orjson.dumps(
                    {
                        "error": "request headers not received in time",
                        "detail": f"send a request's headers within {self._header_timeout:g} s",
                    }
                ),
            )
        )
        logger.debug(
            "Closed a connection that sent no request headers in %.1f s", self._header_timeout
        )
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A JSON error; a malformed request (4xx) is one WARNING line, not a traceback."""
        reason = shorten(message or str(exc or "") or f"HTTP {status}")
        if status >= 500:
            # A bug in a handler: keep the traceback, but not a whole 8 KB request line.
            self.logger.error(
                "Error handling %s %s from %s",
                request.method,
                shorten(request.path),
                request.remote,
                exc_info=exc,
            )
            body = json_error(status, "internal server error")
        else:
            logger.warning("Malformed HTTP request from %s: %s", request.remote, reason)
            body = json_error(status, "malformed HTTP request", detail=reason)
        if request.writer.output_size > 0:
            raise ConnectionError(
                "Response is sent already, cannot send another response with the error message"
            )
        body.force_close()
        return body


class OverCapConnection(asyncio.Protocol):
    """A connection over the cap: read the request's head, answer it at once, close."""

    def __init__(self, server: LimitedServer) -> None:
        self._server = server
        self._head = b""
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(OVERFLOW_HEADER_TIMEOUT, self.answer)

    def data_received(self, data: bytes) -> None:
        self._head += data
        if b"\r\n\r\n" in self._head or len(self._head) > OVERFLOW_HEAD_BYTES:
            self.answer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._server.release_overflow(self)

    def answer(self) -> None:
        """Answer what has arrived of the request (maybe nothing: a 503) and close."""
        if self._transport is None or self._transport.is_closing():
            return
        method, _, rest = self._head.partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        self._transport.write(self._server.over_cap_answer(method, path))
        self._transport.close()


class LimitedServer(web.Server):
    """aiohttp's server with a cap on open connections and a header deadline for each."""

    def __init__(
        self,
        handler: Any,
        *,
        request_factory: Any,
        handler_cancellation: bool,
        loop: asyncio.AbstractEventLoop,
        limits: HttpLimits,
        cap: int,
        **handler_kwargs: Any,
    ) -> None:
        super().__init__(
            handler,
            request_factory=request_factory,
            handler_cancellation=handler_cancellation,
            loop=loop,
            **handler_kwargs,
        )
        self.loop = loop
        self.limits = limits
        self.cap = cap
        self._handler_kwargs = {**handler_kwargs, "keepalive_timeout": limits.idle_timeout}
        # A weak set: a protocol that never got its connection is forgotten, not counted forever.
        self._open: weakref.WeakSet[asyncio.BaseProtocol] = weakref.WeakSet()
        # Over-cap connections waiting for their request, oldest first.
        self._overflow: OrderedDict[OverCapConnection, None] = OrderedDict()
        self._over_cap_since_full = 0
        self._full = False
        ready = {
            "ready": False,
            "checks": {
                "http_connections": {
                    "ok": False,
                    "detail": f"{cap} connections open, the cap (HTTP_MAX_CONNECTIONS)",
                }
            },
        }
        busy = {
            "error": "too many connections",
            "detail": f"this worker serves at most {cap} connections at once; retry later",
        }
        self.answers = {
            b"/health": raw_response("200 OK", b'{"status":"ok"}'),
            b"/ready": raw_response(
                "503 Service Unavailable", orjson.dumps(ready), "Retry-After: 1"
            ),
            b"": raw_response("503 Service Unavailable", orjson.dumps(busy), "Retry-After: 1"),
        }

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def __call__(self) -> Any:
        """A protocol for a new connection (asyncio calls this on every accept)."""
        if len(self._open) < self.cap:
            handler = GuardedRequestHandler(
                self,
                loop=self.loop,
                header_timeout=self.limits.header_timeout,
                **self._handler_kwargs,
            )
            self._open.add(handler)
            return handler
        if not self._full:
            self._full = True
            logger.warning(
                "HTTP connection cap reached: %d connections open "
                "(HTTP_MAX_CONNECTIONS); new connections get 503 until some close",
                len(self._open),
            )
        self._over_cap_since_full += 1
        if len(self._overflow) >= OVERFLOW_CONNECTIONS:
            oldest, _ = self._overflow.popitem(last=False)
            oldest.answer()
        protocol = OverCapConnection(self)
        self._overflow[protocol] = None
        return protocol

    def release(self, handler: GuardedRequestHandler) -> None:
        self._open.discard(handler)
        # Back under 90% of the cap: the overload is over (a margin, so the log does not flap).
        if self._full and len(self._open) < self.cap * 0.9:
            self._full = False
            logger.info(
                "HTTP connections back under the cap: %d open; %d connections were "
                "answered over the cap meanwhile",
                len(self._open),
                self._over_cap_since_full,
            )
            self._over_cap_since_full = 0

    def release_overflow(self, protocol: OverCapConnection) -> None:
        self._overflow.pop(protocol, None)

    def over_cap_answer(self, method: bytes, path: bytes) -> bytes:
        answer = self.answers.get(path, self.answers[b""])
        if method == b"HEAD":
            return answer.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        return answer if method in (b"GET", b"") else self.answers[b""]


class LimitedAppRunner(web.AppRunner):
    """aiohttp's AppRunner whose server is a LimitedServer (raises the open-files limit)."""

    def __init__(
        self,
        app: web.Application,
        *,
        limits: HttpLimits,
        before_start: Callable[[web.UrlDispatcher], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits
        self.before_start = before_start

    async def _make_server(self) -> web.Server:
        self.before_start(self.app.router)  # the last routes, before aiohttp freezes them
        plain = await super()._make_server()  # runs the app's startup and freezes it
        open_files = raise_open_files_limit()
        cap = connection_cap(self.limits.max_connections, open_files)
        logger.info(
            "HTTP limits: %d connections at once (open-files limit %d), headers within "
            "%g s, idle keep-alive %g s",
            cap,
            open_files,
            self.limits.header_timeout,
            self.limits.idle_timeout,
        )
        return LimitedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            limits=self.limits,
            cap=cap,
            access_log=None,
        )


def install(
    driver: AiohttpWeb, settings: Settings, before_start: Callable[[web.UrlDispatcher], None]
) -> None:
    """Serve Faust's web app with the limits of ``settings``; ``before_start`` adds routes.

    Call before the worker starts. ``before_start`` runs when the server starts, after
    Faust has added its blueprints' routes.
    """
    driver.web_app.on_response_prepare.append(add_security_headers)
    driver._runner = LimitedAppRunner(
        driver.web_app,
        limits=HttpLimits.from_settings(settings),
        before_start=before_start,
        access_log=None,
    )
    conf = driver.app.conf
    # aiohttp listens with a backlog of 128: in a burst of new connections the kernel drops the
    # SYNs beyond it and clients retry 1, 3, 7... seconds later. Queue up to the cap instead
    # (the kernel lowers it to net.core.somaxconn).
    driver._transport_handlers = {
        **driver._transport_handlers,
        "tcp": lambda: web.TCPSite(
            driver._runner,
            conf.web_bind,
            conf.web_port,
            ssl_context=conf.web_ssl_context,
            backlog=max(LISTEN_BACKLOG, settings.http_max_connections),
        ),
    }
