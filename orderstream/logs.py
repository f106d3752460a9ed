"""Logging set-up from LOG_LEVEL and LOG_FORMAT, and the context every order log line carries."""

from __future__ import annotations

from typing import Any

from faust.types import EventT

TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """A dictConfig for the worker; it replaces Faust's, so LOG_LEVEL wins over `-l`."""
    formatter: dict[str, Any] = (
        {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
        if fmt == "json"
        else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        # aiokafka's per-attempt connection errors: once per outage (kafka_watch.py).
        "filters": {"kafka_outage": {"()": "orderstream.kafka_watch.outage_filter"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stdout",
                "filters": ["kafka_outage"],
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
    }


def order_context(event: EventT, order_uid: str | None = None) -> dict[str, Any]:
    """Fields for `extra=`: which order, and where it came from (JSON logs show them as keys)."""
    message = event.message
    return {
        "order_uid": order_uid,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
    }


def event_position(event: EventT) -> str:
    """Where the event's message is, ``topic[partition]@offset``, for text log lines."""
    message = event.message
    return f"{message.topic}[{message.partition}]@{message.offset}"
