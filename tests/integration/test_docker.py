"""docker-compose.yaml, the Dockerfile and the Docker make targets, checked as files.

Docker does not run on the CI machines, so nothing here builds or starts a container: these
tests read the files and hold them to what the README documents.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import fields
from typing import Any

import pytest
import yaml

from orderstream.config import Settings

from harness import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
KAFKA_POM = REPO_ROOT / "scripts" / "kafka" / "pom.xml"
SETTING_NAMES = {field.name.upper() for field in fields(Settings)}
# ${NAME:-default} and ${NAME}: Compose's interpolation.
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def interpolate(value: str) -> str:
    """What Compose makes of ``value`` when none of its variables is set."""
    return INTERPOLATION.sub(lambda match: match.group(2) or "", value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def published_ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host, container) pairs of ``ports``, short syntax ``"29092:29092"`` or long syntax."""
    pairs = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            pairs.add((int(port["published"]), int(port["target"])))
        else:
            *_, host, container = str(port).split(":")
            pairs.add((int(host), int(container.split("/")[0])))
    return pairs


def kafka_version() -> str:
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(KAFKA_POM).getroot().find("m:properties/m:kafka.version", namespace)
    assert version is not None and version.text
    return version.text.strip()


def image_tag(image: str) -> str:
    """The tag of ``name[:tag][@digest]`` ('' when there is none; a registry port is no tag)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


# --- docker-compose.yaml ------------------------------------------------------------------


def test_compose_has_the_documented_services_and_ports(services: dict[str, Any]) -> None:
    assert {"kafka", "postgres", "kafka-ui", "app", "producer"} <= set(services)
    assert (29092, 29092) in published_ports(services["kafka"])
    assert (5432, 5432) in published_ports(services["postgres"])
    assert (8080, 8080) in published_ports(services["kafka-ui"])
    assert (8081, 8081) in published_ports(services["app"])


@pytest.mark.parametrize("name", ["app", "producer"])
def test_every_setting_is_set_for_the_app(services: dict[str, Any], name: str) -> None:
    env = environment(services[name])
    assert sorted(SETTING_NAMES - set(env)) == [], "settings missing from docker-compose.yaml"
    assert sorted(set(env) - SETTING_NAMES) == [], "names in docker-compose.yaml the app ignores"


def test_app_environment_is_a_valid_configuration(services: dict[str, Any]) -> None:
    env = {name: interpolate(value) for name, value in environment(services["app"]).items()}
    settings = Settings.from_env(env)
    assert settings.http_addr == ("0.0.0.0", 8081)
    assert settings.kafka_brokers == ("kafka:9092",)
    assert settings.pg_url.startswith("postgres://postgres:postgres@postgres:5432/orders")
    assert settings.cache_enabled is True
    assert str(settings.data_dir) == "/data"
    # The image installs the package into site-packages: these point at what it copies to /app.
    assert (str(settings.web_dir), str(settings.sql_dir), str(settings.openapi_file)) == (
        "/app/web", "/app/sql", "/app/openapi.yaml")


def test_app_gets_time_to_shut_down_before_it_is_killed(services: dict[str, Any]) -> None:
    grace = re.fullmatch(r"(\d+)s", services["app"]["stop_grace_period"])
    assert grace, services["app"]["stop_grace_period"]
    env = {name: interpolate(value) for name, value in environment(services["app"]).items()}
    assert Settings.from_env(env).shutdown_timeout < int(grace.group(1))


def test_cache_can_be_switched_from_the_shell(services: dict[str, Any]) -> None:
    assert environment(services["app"])["CACHE_ENABLED"] == "${CACHE_ENABLED:-true}"


def test_every_image_is_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue  # built from this repository
        image = service.get("image", "")
        tag = image_tag(image)
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned to a version"


def test_images_are_the_documented_ones(services: dict[str, Any]) -> None:
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version()}"
    assert re.fullmatch(r"postgres:16(\.\d+)?(-[a-z0-9]+)?", services["postgres"]["image"])
    assert services["kafka-ui"]["image"].startswith("ghcr.io/kafbat/kafka-ui:")


def test_kafka_has_an_internal_and_a_host_listener(services: dict[str, Any]) -> None:
    env = environment(services["kafka"])
    advertised = dict(listener.split("://", 1)
                      for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert "localhost:29092" in advertised.values()
    internal = environment(services["app"])["KAFKA_BROKERS"]
    assert internal in advertised.values() and not internal.startswith("localhost")
    assert environment(services["kafka-ui"])["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == internal
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, one node


def test_postgres_mounts_point_at_the_migrations(services: dict[str, Any]) -> None:
    mounts = {}
    for volume in services["postgres"]["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[target] = source
    init_dir = REPO_ROOT / mounts["/docker-entrypoint-initdb.d"]
    sql_dir = REPO_ROOT / mounts["/sql"]
    for source in mounts.values():
        if source.startswith("."):
            assert (REPO_ROOT / source).exists(), f"{source} does not exist"
    scripts = sorted(init_dir.glob("*.sh"))
    assert scripts, f"no init script in {init_dir}"
    assert all(script.stat().st_mode & 0o111 for script in scripts)
    # The script applies /sql/<number>*.sql except the rollbacks: there must be some to apply.
    text = "\n".join(script.read_text() for script in scripts)
    assert "/sql/[0-9]*.sql" in text and "*.rollback.sql) continue" in text
    up = [path for path in sql_dir.glob("[0-9]*.sql") if not path.name.endswith(".rollback.sql")]
    assert up, f"no up migration in {sql_dir}"
    assert "pg-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]


def test_app_starts_after_healthy_kafka_and_postgres(services: dict[str, Any]) -> None:
    depends = services["app"]["depends_on"]
    for name in ("kafka", "postgres"):
        assert depends[name] == {"condition": "service_healthy"}
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"


def test_volumes_are_named_and_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    named = {volume.split(":", 1)[0] for service in services.values()
             for volume in service.get("volumes", []) if not volume.startswith((".", "/"))}
    assert named and named <= declared
    data_dir = environment(services["app"])["DATA_DIR"]
    assert any(volume.endswith(f":{data_dir}") for volume in services["app"]["volumes"])


def test_producer_is_a_one_shot_tool(services: dict[str, Any]) -> None:
    producer = services["producer"]
    assert producer["profiles"] == ["tools"]
    assert producer["command"] == ["faust", "-A", "orderstream", "produce",
                                   "-n", "${N:-5}", "--interval", "${INTERVAL:-0.5}"]
    assert producer["depends_on"]["kafka"] == {"condition": "service_healthy"}
    assert "restart" not in producer


# --- Dockerfile ---------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            result.append((keyword.upper(), args.strip()))
            pending = ""
    return result


def of_kind(kind: str) -> list[str]:
    return [args for keyword, args in instructions() if keyword == kind]


def without_flags(args: str) -> list[str]:
    return [word for word in shlex.split(args) if not word.startswith("--")]


def test_dockerfile_runs_the_worker() -> None:
    command = json.loads(of_kind("CMD")[-1])
    assert command[:4] == ["faust", "-A", "orderstream", "worker"]


def test_dockerfile_base_images_are_pinned() -> None:
    arg_defaults = dict(arg.split("=", 1) for arg in of_kind("ARG") if "=" in arg)
    stages: set[str] = set()
    for args in of_kind("FROM"):
        words = without_flags(args)
        image = INTERPOLATION.sub(lambda m: arg_defaults.get(m.group(1), ""), words[0])
        if image not in stages:
            tag = image_tag(image)
            assert tag and tag != "latest", f"FROM {image}: not pinned"
            assert image.startswith("python:3.11"), image
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2])


def test_dockerfile_runs_as_a_user_that_is_not_root() -> None:
    users = of_kind("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":", 1)[0]
    assert user not in ("root", "0")


def test_dockerfile_healthcheck_asks_health() -> None:
    (healthcheck,) = of_kind("HEALTHCHECK")
    assert "/health" in healthcheck and "CMD" in healthcheck


def test_dockerfile_copies_files_that_exist_and_are_in_the_context() -> None:
    ignored = [line.strip().rstrip("/") for line in
               (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copied = []
    for args in of_kind("COPY"):
        if "--from=" in args:
            continue  # from an earlier stage
        *sources, _destination = without_flags(args)
        copied += sources
    assert copied
    for source in copied:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        name = source.rstrip("/")
        assert not any(name == pattern or name.startswith(pattern + "/") for pattern in ignored), (
            f"COPY {source}: excluded by .dockerignore")


def test_dockerfile_points_the_settings_at_the_copied_files() -> None:
    env: dict[str, str] = {}
    for args in of_kind("ENV"):
        env.update(dict(word.split("=", 1) for word in shlex.split(args)))
    assert env["WEB_DIR"] == "/app/web" and env["SQL_DIR"] == "/app/sql"
    assert env["OPENAPI_FILE"] == "/app/openapi.yaml" and env["DATA_DIR"] == "/data"
    destinations = {without_flags(args)[-1].rstrip("/") for args in of_kind("COPY")}
    assert {"/app/web", "/app/sql", "/app/openapi.yaml"} <= destinations
    assert any("/data" in volume for volume in of_kind("VOLUME"))


# --- Makefile -----------------------------------------------------------------------------


@pytest.mark.parametrize("target, command", [
    ("up", "docker compose up -d --build"),
    ("down", "docker compose down -v"),
    ("logs", "docker compose logs -f app"),
    ("docker-producer", "N=7 INTERVAL=0.1 docker compose run --rm producer"),
    ("cache-off-up", "CACHE_ENABLED=false docker compose up -d --build app"),
    ("cache-on-up", "CACHE_ENABLED=true docker compose up -d --build app"),
])
def test_make_docker_targets(target: str, command: str) -> None:
    # --no-print-directory: under `make test` the nested make would announce its directory.
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", target, "N=7", "INTERVAL=0.1"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert dry_run.stdout.strip() == command
