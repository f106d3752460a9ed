"""Tracing's settings and its off state (README "Tracing"): no services needed."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from orderstream import tracing
from orderstream.config import ConfigError, Settings


def test_off_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.otel_traces_exporter == ()
    assert settings.otel_service_name == "orderstream"
    assert settings.otel_traces_sampler == "parentbased_always_on"
    assert not tracing.setup(settings)


@pytest.mark.parametrize(
    "raw, exporters",
    [
        ("console", ("console",)),
        ("otlp", ("otlp",)),
        ("OTLP, console", ("otlp", "console")),
        ("none", ()),
        ("", ()),
    ],
)
def test_exporters(raw: str, exporters: tuple[str, ...]) -> None:
    assert Settings.from_env({"OTEL_TRACES_EXPORTER": raw}).otel_traces_exporter == exporters


def test_sdk_disabled_turns_it_off() -> None:
    settings = Settings.from_env({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"})
    assert not tracing.setup(settings)


def test_sampler_and_endpoint() -> None:
    settings = Settings.from_env(
        {
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318",
            "OTEL_SERVICE_NAME": "orders-eu",
        }
    )
    assert settings.otel_traces_sampler == "parentbased_traceidratio"
    assert settings.otel_traces_sampler_arg == 0.25
    assert settings.otel_exporter_otlp_endpoint == "https://collector:4318"
    assert settings.otel_service_name == "orders-eu"
    assert (
        "0.25"
        in tracing.sampler(
            settings.otel_traces_sampler, settings.otel_traces_sampler_arg
        ).get_description()
    )


@pytest.mark.parametrize(
    "name, value",
    [
        ("OTEL_TRACES_EXPORTER", "jaeger"),
        ("OTEL_TRACES_EXPORTER", "otlp,zipkin"),
        ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
        ("OTEL_TRACES_SAMPLER_ARG", "half"),
        ("OTEL_TRACES_SAMPLER_ARG", "-0.1"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:port"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SDK_DISABLED", "perhaps"),
    ],
)
def test_a_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({name: value})
    assert str(raised.value).startswith(f"Config {name!r} has value {value!r}. ")


def test_off_the_sdk_is_never_imported() -> None:
    """An app built with tracing off has imported no OpenTelemetry module at all, so nothing
    is instrumented (asyncpg, aiohttp) and nothing runs per message or lookup."""
    script = (
        "import sys\n"
        "from orderstream.app import create_app\n"
        "from orderstream.config import Settings\n"
        "create_app(Settings())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


def test_helpers_do_nothing_when_off() -> None:
    assert not tracing.enabled()
    assert tracing.start_batch("orders", []) is None
    with tracing.producing("orders", "uid") as headers:
        assert headers is None
    with tracing.step("store", orders=1) as nothing:
        assert nothing is None
    headers_out: dict[str, str] = {}
    tracing.inject(headers_out)
    assert headers_out == {}

    async def handler(request: Any) -> Any:
        return None

    assert tracing.traced_lookup(handler) is handler
