"""create_app(settings) builds the whole app from a Settings object; importing builds nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aiohttp.web_urldispatcher import AbstractResource

from harness import REPO_ROOT
from orderstream.app import OrderApp, create_app
from orderstream.config import Settings


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_the_order_core_imports_without_a_valid_environment() -> None:
    result = run_python("import orderstream.order", KAFKA_PARTITIONS="zero")

    assert result.returncode == 0, result.stderr


def test_importing_any_module_reads_no_environment_and_builds_no_app() -> None:
    code = (
        "import importlib, pkgutil, faust, orderstream\n"
        "for module in pkgutil.walk_packages(orderstream.__path__, 'orderstream.'):\n"
        "    if module.name != 'orderstream.__main__':\n"
        "        importlib.import_module(module.name)\n"
        "assert not isinstance(vars(orderstream).get('app'), faust.App)\n"
    )
    result = run_python(code, KAFKA_PARTITIONS="zero")

    assert result.returncode == 0, result.stderr


def test_the_package_builds_its_app_from_the_environment_on_first_use() -> None:
    result = run_python(
        "import orderstream; print(orderstream.app.conf.id, orderstream.app is orderstream.app)",
        KAFKA_GROUP_ID="factory-test",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["factory-test", "True"]
    bad = run_python("import orderstream; orderstream.app", KAFKA_PARTITIONS="zero")
    assert bad.returncode != 0 and "KAFKA_PARTITIONS" in bad.stderr


def test_an_app_from_settings_has_its_topics_agents_cache_and_routes(tmp_path: Path) -> None:
    settings = Settings(
        kafka_group_id="factory-unit",
        kafka_topic="orders-unit",
        kafka_partitions=3,
        cache_size=30,
        data_dir=tmp_path,
    )

    app = create_app(settings)

    assert isinstance(app, OrderApp) and app.settings is settings
    assert app.orders_topic.get_topic_name() == "orders-unit"
    assert app.cache_updates_topic.get_topic_name() == "factory-unit-order-cache-updates"
    assert sorted(app.agents) == [
        "orderstream.agents.cache_orders",
        "orderstream.agents.store_orders",
    ]
    assert app.recent_orders.partitions == 3 and app.recent_orders.capacity == 10
    assert app.recent_orders.table.name == "order-cache"
    routes = {
        resource.canonical
        for resource in app.web.web_app.router.resources()  # type: ignore[attr-defined]
        if isinstance(resource, AbstractResource)
    }
    assert {
        "/order/{order_uid}",
        "/order/",
        "/order",
        "/health",
        "/ready",
        "/",
        "/openapi.yaml",
        "/metrics",
    } <= routes
