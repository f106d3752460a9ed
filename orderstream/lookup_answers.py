"""The responses of GET /order/{order_uid}, with headers built once per kind of answer.

Every lookup's answer carries Content-Type, X-Served-By, X-Source (when it has one),
X-Duration-ms and the security headers (security_headers.py). All but X-Duration-ms are the
same for every answer of one source, so each source's set is built once (once the canonical
URL is known) and aiohttp copies it into each answer: a C copy of a CIMultiDict instead of
building a dict, converting it and writing five headers more. The app's on_response_prepare
receiver, which adds the security headers to every other answer, writes the same values again.
"""

from __future__ import annotations

import time

from aiohttp import web
from multidict import CIMultiDict

from . import metrics
from .security_headers import SECURITY_HEADERS

JSON = "application/json"


class LookupAnswers:
    """Builds a lookup's response and records it in the request metrics."""

    def __init__(self, route: str, served_by: str) -> None:
        self.route = route
        self.served_by = served_by
        self._headers: dict[str | None, CIMultiDict[str]] = {}
        self._series: dict[tuple[str | None, int], metrics.RequestSeries] = {}

    def headers_of(self, source: str | None) -> CIMultiDict[str]:
        headers = self._headers.get(source)
        if headers is None:
            headers = CIMultiDict(SECURITY_HEADERS)
            headers["Content-Type"] = JSON
            headers["X-Served-By"] = self.served_by
            if source:
                headers["X-Source"] = source
            self._headers[source] = headers
        return headers

    def series_of(self, source: str | None, status: int) -> metrics.RequestSeries:
        series = self._series.get((source, status))
        if series is None:
            series = self._series[source, status] = metrics.request_seconds.series(
                self.route, source, status
            )
        return series

    def answer(self, body: bytes, status: int, source: str | None, started: float) -> web.Response:
        """``body`` as JSON with the lookup's headers, timed from ``started`` (perf_counter)."""
        elapsed = time.perf_counter() - started
        self.series_of(source, status).observe(elapsed)
        response = web.Response(body=body, status=status, headers=self.headers_of(source))
        response.headers["X-Duration-ms"] = f"{elapsed * 1000:.3f}"
        return response
