"""docker-compose.yaml, the Dockerfile, the lock and the Docker make targets, checked as files.

Docker does not run on the CI machines, so nothing here builds or starts a container: these
tests read the files and hold them to what the README documents. (tests/integration/
test_packaging.py builds the package the image installs.)
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import fields
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from harness import REPO_ROOT
from orderstream.config import Settings

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
KAFKA_POM = REPO_ROOT / "scripts" / "kafka" / "pom.xml"
LOCK = REPO_ROOT / "requirements.lock"
TEST_LOCK = REPO_ROOT / "requirements-test.lock"
# The services built from this repository: one image, three commands.
OWN_SERVICES = ("app", "migrate", "producer")
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
    assert {"kafka", "postgres", "kafka-ui", "migrate", "app", "producer"} <= set(services)
    assert (29092, 29092) in published_ports(services["kafka"])
    assert (5432, 5432) in published_ports(services["postgres"])
    assert (8080, 8080) in published_ports(services["kafka-ui"])
    assert (8081, 8081) in published_ports(services["app"])


@pytest.mark.parametrize("name", OWN_SERVICES)
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
    assert settings.otel_traces_exporter == ()  # tracing off unless the shell turns it on
    # Left empty: the package's own copies (orderstream/_assets/ in the image's site-packages).
    for name in ("WEB_DIR", "SQL_DIR", "OPENAPI_FILE"):
        assert env[name] == "", f"{name}={env[name]!r}: the image has no such path"
    default = Settings()
    assert (settings.web_dir, settings.sql_dir, settings.openapi_file) == (
        default.web_dir,
        default.sql_dir,
        default.openapi_file,
    )


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
    advertised = dict(
        listener.split("://", 1) for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    assert "localhost:29092" in advertised.values()
    internal = environment(services["app"])["KAFKA_BROKERS"]
    assert internal in advertised.values() and not internal.startswith("localhost")
    assert environment(services["kafka-ui"])["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == internal
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, one node


def test_one_broker_address_reaches_the_docker_and_the_local_stack(
    services: dict[str, Any],
) -> None:
    """KAFKA_BROKERS' default is compose's host listener and the local stack's port, so a host
    command (faust send, make producer, a worker) needs no setting against either stack."""
    (default,) = Settings().kafka_brokers
    host, _, port = default.partition(":")
    advertised = environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert f"PLAINTEXT_HOST://{default}" in advertised.split(",")
    assert (int(port), int(port)) in published_ports(services["kafka"])
    stack = (REPO_ROOT / "scripts" / "stack.sh").read_text()
    assert f"KAFKA_PORT=${{KAFKA_PORT:-{port}}}" in stack
    tools = (REPO_ROOT / "scripts" / "kafka-tools.sh").read_text()
    assert f"BROKERS=${{KAFKA_BROKERS:-{default}}}" in tools
    assert f"#KAFKA_BROKERS={default}" in (REPO_ROOT / ".env.example").read_text()
    assert host == "localhost"


def test_postgres_applies_no_sql_of_its_own(services: dict[str, Any]) -> None:
    # The schema is yoyo's (the migrate service), so that it records what it applied: no init
    # scripts that would apply sql/ behind its back on a new volume.
    volumes = services["postgres"]["volumes"]
    assert volumes == ["pg-data:/var/lib/postgresql/data"]
    assert not (REPO_ROOT / "sql" / "docker-init").exists()
    assert all(
        "docker-entrypoint-initdb.d" not in str(volume)
        for service in services.values()
        for volume in service.get("volumes", [])
    )


def test_migrate_runs_once_after_postgres_is_healthy(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["faust", "-A", "orderstream", "migrate"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate.get("restart", "no") == "no", "a one-shot must not be restarted"
    assert "ports" not in migrate and "profiles" not in migrate  # `make up` runs it
    # The app's PostgreSQL: the schema lands where the app reads.
    assert environment(migrate)["PG_URL"] == environment(services["app"])["PG_URL"]


def test_app_starts_after_healthy_kafka_and_postgres_and_the_migrations(
    services: dict[str, Any],
) -> None:
    depends = services["app"]["depends_on"]
    assert depends == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }


@pytest.mark.parametrize("name", ["kafka", "postgres"])
def test_services_waited_for_have_healthchecks(services: dict[str, Any], name: str) -> None:
    healthcheck = services[name]["healthcheck"]
    assert healthcheck["test"][0] in ("CMD", "CMD-SHELL") and len(healthcheck["test"]) > 1
    for key in ("interval", "timeout", "start_period"):
        assert re.fullmatch(r"\d+s", healthcheck[key]), f"{name}: {key}={healthcheck[key]!r}"
    assert int(healthcheck["retries"]) >= 3


def test_every_wait_for_health_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for needed, condition in (service.get("depends_on") or {}).items():
            assert needed in services, f"{name} depends on unknown {needed}"
            if condition["condition"] == "service_healthy":
                assert services[needed].get("healthcheck", {}).get("test"), (
                    f"{name} waits for {needed}, which has no healthcheck"
                )


def test_own_services_share_one_image_built_here(services: dict[str, Any]) -> None:
    for name in OWN_SERVICES:
        assert services[name]["build"] == ".", name
        assert services[name]["image"] == "orderstream:local", name


def test_volumes_are_named_and_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    named = {
        volume.split(":", 1)[0]
        for service in services.values()
        for volume in service.get("volumes", [])
        if not volume.startswith((".", "/"))
    }
    assert named and named <= declared
    data_dir = environment(services["app"])["DATA_DIR"]
    assert any(volume.endswith(f":{data_dir}") for volume in services["app"]["volumes"])


def test_producer_is_a_one_shot_tool(services: dict[str, Any]) -> None:
    producer = services["producer"]
    assert producer["profiles"] == ["tools"]
    assert producer["command"] == [
        "faust",
        "-A",
        "orderstream",
        "produce",
        "-n",
        "${N:-5}",
        "--interval",
        "${INTERVAL:-0.5}",
    ]
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
    ignored = [
        line.strip().rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
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
            f"COPY {source}: excluded by .dockerignore"
        )


def stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's instructions by stage name (FROM ... AS name)."""
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            words = without_flags(args)
            current = result.setdefault(words[2] if len(words) >= 3 else words[0], [])
        current.append((keyword, args))
    return result


def test_dockerfile_installs_the_lock_before_copying_the_source() -> None:
    build = stages()["build"]
    copies = [
        (index, without_flags(args)[:-1])
        for index, (keyword, args) in enumerate(build)
        if keyword == "COPY"
    ]
    runs = [(index, args) for index, (keyword, args) in enumerate(build) if keyword == "RUN"]
    # The dependency layer: the lock alone, then pip on it, before any source is copied.
    first_index, first_sources = copies[0]
    assert first_sources == ["requirements.lock"]
    (lock_install,) = [index for index, args in runs if "-r requirements.lock" in args]
    assert lock_install > first_index
    assert all(index > lock_install for index, _ in copies[1:])
    source = {source.rstrip("/") for _, sources in copies[1:] for source in sources}
    # What building the package needs (setup.py copies sql/, web/ and openapi.yaml into it).
    assert {
        "setup.py",
        "setup.cfg",
        "pyproject.toml",
        "MANIFEST.in",
        "README.md",
        "orderstream",
        "sql",
        "web",
        "openapi.yaml",
    } <= source
    # Then the package alone, into site-packages (not editable), resolving nothing.
    (package_install,) = [args for index, args in runs if index > lock_install]
    words = shlex.split(package_install)
    assert words[:2] == ["pip", "install"] and "--no-deps" in words and words[-1] == "."
    assert "-e" not in words and "--editable" not in words


def test_dockerfile_runtime_gets_only_the_venv() -> None:
    runtime = stages()["runtime"]
    copies = [without_flags(args) for keyword, args in runtime if keyword == "COPY"]
    assert copies == [["/opt/venv", "/opt/venv"]]
    assert all("--from=build" in args for keyword, args in runtime if keyword == "COPY")
    env: dict[str, str] = {}
    for keyword, args in runtime:
        if keyword == "ENV":
            env.update(dict(word.split("=", 1) for word in shlex.split(args)))
    # No path patches: the package finds its own files (test_packaging.py).
    assert not {"WEB_DIR", "SQL_DIR", "OPENAPI_FILE"} & set(env)
    assert env["DATA_DIR"] == "/data"
    assert any("/data" in volume for volume in of_kind("VOLUME"))


# --- The lock -----------------------------------------------------------------------------


def pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a lock file; every requirement in it is pinned with ==."""
    result: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{path.name}: {line!r} is not pinned"
        result[canonicalize_name(requirement.name)] = specifier.version
    assert result, f"{path.name} pins nothing"
    return result


def declared() -> tuple[list[Requirement], list[Requirement]]:
    """setup.cfg's install_requires and its test extra."""
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")

    def requirements(text: str) -> list[Requirement]:
        return [
            Requirement(line)
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]

    return (
        requirements(config["options"]["install_requires"]),
        requirements(config["options.extras_require"]["test"]),
    )


def test_lock_files_say_how_they_are_made() -> None:
    for path in (LOCK, TEST_LOCK):
        head = path.read_text().splitlines()[:2]
        assert head == [
            "# This file was autogenerated by uv via the following command:",
            "#    make lock",
        ], f"{path.name} was not written by `make lock`"


@pytest.mark.parametrize("path, extra", [(LOCK, False), (TEST_LOCK, True)])
def test_lock_pins_every_declared_requirement_in_range(path: Path, extra: bool) -> None:
    runtime, test = declared()
    locked = pins(path)
    for requirement in runtime + (test if extra else []):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{path.name} lacks {requirement} (run `make lock`)"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{path.name} pins {name}=={locked[name]}, outside setup.cfg's {requirement} "
            "(run `make lock`)"
        )
        for extra_name in requirement.extras:  # psycopg[binary] -> psycopg-binary
            assert canonicalize_name(f"{name}-{extra_name}") in locked, (
                f"{path.name} lacks {requirement}'s extra"
            )


def test_image_runs_what_the_tests_ran() -> None:
    runtime, test = declared()
    locked, test_locked = pins(LOCK), pins(TEST_LOCK)
    # Same versions where both pin a package, and no test tool in the image.
    assert {
        name: version for name, version in locked.items() if test_locked.get(name) != version
    } == {}
    for requirement in test:
        name = canonicalize_name(requirement.name)
        assert name not in locked or any(canonicalize_name(r.name) == name for r in runtime), (
            f"{name} is in the image's lock"
        )


def test_venv_has_the_test_lock_installed() -> None:
    """What `make setup` installs: every package of the test lock at its pinned version."""
    wrong = {}
    for name, version in pins(TEST_LOCK).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed == "missing" or Version(installed) != Version(version):
            wrong[name] = f"locked {version}, installed {installed}"
    assert wrong == {}, "the venv differs from requirements-test.lock (run `make setup`)"


# --- Makefile -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target, command",
    [
        ("up", "docker compose up -d --build"),
        ("down", "docker compose down -v"),
        ("logs", "docker compose logs -f app"),
        ("docker-producer", "N=7 INTERVAL=0.1 docker compose run --rm producer"),
        ("docker-migrate", "docker compose run --rm migrate"),
        ("cache-off-up", "CACHE_ENABLED=false docker compose up -d --build app"),
        ("cache-on-up", "CACHE_ENABLED=true docker compose up -d --build app"),
    ],
)
def test_make_docker_targets(target: str, command: str) -> None:
    # --no-print-directory: under `make test` the nested make would announce its directory.
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", target, "N=7", "INTERVAL=0.1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert dry_run.stdout.strip() == command


def dry_run(*args: str) -> str:
    return subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.parametrize(
    "target, command",
    [
        ("producer", ".venv/bin/faust -A orderstream produce -n 7 --interval 0.1"),
        ("migrate", ".venv/bin/faust -A orderstream migrate"),
        ("migrate-down", ".venv/bin/faust -A orderstream migrate --down"),
    ],
)
def test_host_clients_need_only_the_venv(target: str, command: str) -> None:
    """A compose-only user (no Java, no Kafka jars, no Chromium) can run them."""
    # -W: as if the lock had changed, so the venv's recipe shows; the setup target's never may.
    lines = dry_run("-W", "requirements-test.lock", target, "N=7", "INTERVAL=0.1").splitlines()
    assert lines[-1] == command
    assert not any("stack.sh" in line or "browser.sh" in line for line in lines), lines


@pytest.mark.parametrize(
    "changed",
    ["setup.cfg", "pyproject.toml", "setup.py", "requirements.lock", "requirements-test.lock"],
)
def test_venv_installs_the_test_lock_when_it_changes(changed: str) -> None:
    lines = dry_run("-W", changed, ".venv/.installed").splitlines()
    assert ".venv/bin/pip install --quiet -r requirements-test.lock" in lines
    assert ".venv/bin/pip install --quiet --no-deps -e ." in lines
    assert not any("[test]" in line for line in lines), "the venv must not resolve setup.cfg anew"


def test_make_lock_compiles_both_lock_files() -> None:
    lines = [shlex.split(line) for line in dry_run("lock").splitlines() if " compile " in line]
    assert [words[words.index("-o") + 1] for words in lines] == [
        "requirements-test.lock",
        "requirements.lock",
    ]
    for words in lines:
        assert words[1:4] == ["pip", "compile", "setup.cfg"]
        assert words[words.index("--python-version") + 1] == "3.11"
        assert words[words.index("--python-platform") + 1] == "linux"
    assert "--extra" in lines[0] and lines[0][lines[0].index("--extra") + 1] == "test"
    assert lines[1][lines[1].index("--constraints") + 1] == "requirements-test.lock"
