"""The security headers every HTTP answer carries, aiohttp's and the web server's raw ones.

A strict Content-Security-Policy (same origin only, no inline script), nosniff, no framing,
no referrer, and a ``Server`` header without versions (tests/integration/test_security_headers.py).
"""

from __future__ import annotations

from aiohttp import web

# The page loads its script, style and data from this origin only; nothing inline, nothing
# framed. JSON answers carry the same policy: a browser that renders one runs nothing either.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Server": "orderstream",  # aiohttp's default names its and Python's versions
}


class SecuredResponse(web.Response):
    """A response built with SECURITY_HEADERS already (the order lookup's, lookup_answers.py):
    the receiver below leaves it as it is instead of writing the same five values again."""


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp's on_response_prepare receiver: SECURITY_HEADERS on every answer of the app."""
    if not isinstance(response, SecuredResponse):
        response.headers.update(SECURITY_HEADERS)
