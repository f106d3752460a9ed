"""Security headers on every answer of a real worker, and a page with nothing inline.

What a browser user relies on: the page runs only the script and style files of its own
origin (an injected inline script is refused), cannot be framed by another site, leaks no
Referer, and no answer is sniffed into something else; none of it depends on which route,
error or limit answered. And the ``Server`` header tells an attacker no versions.
"""

from __future__ import annotations

import socket
from html.parser import HTMLParser
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from harness import REPO_ROOT, Worker, eventually

from .test_hostile_http import Reply, request, send_raw

pytestmark = pytest.mark.timeout(180)

MODEL_UID = "b563feb7b2b84b6test"
TOKEN = "headers-test-token-1"
AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()
CSP_DIRECTIVES = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "object-src": "'none'",
    "form-action": "'self'",
}


def assert_secured(reply: Reply | None, what: str) -> None:
    assert reply is not None, f"no answer to {what}"
    headers = reply.headers
    csp = headers.get("content-security-policy", "")
    directives = dict(
        (part.strip().split(" ", 1) + [""])[:2] for part in csp.split(";") if part.strip()
    )
    for name, value in CSP_DIRECTIVES.items():
        assert directives.get(name) == value, (what, reply.status, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "*" not in csp, csp
    assert headers.get("x-content-type-options") == "nosniff", (what, headers)
    assert headers.get("x-frame-options") == "DENY", (what, headers)
    assert headers.get("referrer-policy") == "no-referrer", (what, headers)
    assert headers.get("server") == "orderstream", (what, headers)  # no versions


async def test_every_answer_carries_the_security_headers(
    start_worker: Any, pipeline_env: dict[str, str], producer: AIOKafkaProducer, model_json: bytes
) -> None:
    worker: Worker = await start_worker(
        API_TOKENS=TOKEN, HTTP_MAX_CONNECTIONS="3", HTTP_HEADER_TIMEOUT="3"
    )
    await producer.send_and_wait(pipeline_env["KAFKA_TOPIC"], model_json, key=MODEL_UID.encode())

    async def cached() -> Reply | None:
        reply = await send_raw(worker.port, request(f"/order/{MODEL_UID}", headers=AUTH))
        return reply if reply and reply.headers.get("x-source") == "cache" else None

    assert_secured(await eventually(cached, what="model.json from the cache"), "a cache hit")

    # (request, the status expected): the page, its assets, the API, every kind of error.
    answers: list[tuple[bytes, int]] = [
        (request("/"), 200),
        (request("/static/app.js"), 200),
        (request("/static/style.css"), 200),
        (request("/docs"), 200),
        (request("/static/swagger-ui-bundle.js"), 200),
        (request(f"/order/{MODEL_UID}?nocache=1", headers=AUTH), 200),
        (request("/order/no-such-order", headers=AUTH), 404),
        (request("/order/not!valid", headers=AUTH), 400),
        (request("/order/", headers=AUTH), 400),
        (request(f"/order/{MODEL_UID}"), 401),
        (request("/health"), 200),
        (request("/metrics"), 200),
        (request("/openapi.yaml"), 200),
        (request("/no/such/path"), 404),
        (request("/static/missing.js"), 404),
        (request(f"/order/{MODEL_UID}", "POST"), 405),
        (request("/health", headers=b"X-Big: " + b"a" * 10_000 + b"\r\n"), 400),  # the parser's
        (b"GET / HTTP/9.9\r\n\r\n", 400),
        (request("/", "HEAD"), 200),
    ]
    for data, status in answers:
        reply = await send_raw(worker.port, data)
        assert reply is not None and reply.status == status, (data[:60], reply)
        assert_secured(reply, repr(data[:60]))
    ready = await send_raw(worker.port, request("/ready"))
    assert ready is not None and ready.status in (200, 503)
    assert_secured(ready, "/ready")

    # A connection that sends no request in time: the 408 written outside aiohttp.
    late = await send_raw(worker.port, b"GET /health HTTP/1.1\r\n", timeout=20, until_closed=True)
    assert late is not None and late.status == 408
    assert_secured(late, "the header timeout's 408")

    # Over the connection cap (3): the quick answers written outside aiohttp.
    idle = [socket.create_connection(("127.0.0.1", worker.port)) for _ in range(3)]
    try:

        async def over_cap() -> Reply | None:
            reply = await send_raw(worker.port, request("/order/x"), timeout=5)
            return reply if reply is not None and reply.status == 503 else None

        busy = await eventually(over_cap, timeout=10, what="a lookup answered 503 over the cap")
        assert busy.headers["retry-after"] == "1"
        assert_secured(busy, "a lookup over the connection cap")
        assert_secured(
            await send_raw(worker.port, request("/health"), timeout=5), "/health over the cap"
        )
    finally:
        for sock in idle:
            sock.close()


class InlineFinder(HTMLParser):
    """Collects what a strict CSP would refuse on a page: inline scripts, styles, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in names
        if tag == "style":
            self.inline.append("<style>")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}=...>")
            if value and value.strip().lower().startswith("javascript:"):
                self.inline.append(f"<{tag} {name}=javascript:...>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"<script>{data.strip()[:40]}")


def test_the_page_has_no_inline_script_or_style() -> None:
    for page in (REPO_ROOT / "web").glob("*.html"):
        finder = InlineFinder()
        finder.feed(page.read_text())
        assert not finder.inline, (page.name, finder.inline)
