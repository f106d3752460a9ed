"""The responses of GET /order/{order_uid}, with headers built once per kind of answer.

Every lookup's answer carries Content-Type, X-Served-By, X-Source (when it has one),
X-Duration-ms and the security headers (security_headers.py). All but X-Duration-ms are the
same for every answer of one source, so each source's set is built once (once the canonical
URL is known) and aiohttp copies it into each answer: a C copy of a CIMultiDict instead of
building a dict, converting it and writing five headers more. The app's on_response_prepare
receiver, which adds the security headers to every other answer, leaves these as they are.
"""

from __future__ import annotations

import time

from aiohttp import web
from multidict import CIMultiDict

from . import metrics
from .metrics import RequestSeries
from .security_headers import SECURITY_HEADERS, SecuredResponse

JSON = "application/json"


class LookupAnswers:
    """Builds a lookup's response and records it in the request metrics."""

    def __init__(self, route: str, served_by: str) -> None:
        self.route = route
        self.served_by = served_by
        # (source, status) -> the answer's headers but X-Duration-ms, and its metric series
        self._kinds: dict[tuple[str | None, int], tuple[CIMultiDict[str], RequestSeries]] = {}

    def kind(self, source: str | None, status: int) -> tuple[CIMultiDict[str], RequestSeries]:
        headers = CIMultiDict(SECURITY_HEADERS)
        headers["Content-Type"] = JSON
        headers["X-Served-By"] = self.served_by
        if source:
            headers["X-Source"] = source
        found = self._kinds[source, status] = (
            headers,
            metrics.request_seconds.series(self.route, source, status),
        )
        return found

    def answer(self, body: bytes, status: int, source: str | None, started: float) -> web.Response:
        """``body`` as JSON with the lookup's headers, timed from ``started`` (perf_counter)."""
        elapsed = time.perf_counter() - started
        headers, series = self._kinds.get((source, status)) or self.kind(source, status)
        series.observe(elapsed)
        response = SecuredResponse(body=body, status=status, headers=headers)
        response.headers["X-Duration-ms"] = f"{elapsed * 1000:.3f}"
        return response
