"""A Kafka broker, Kafka cluster or PostgreSQL server of a test's own, started by scripts/stack.sh.

Fault tests stop, kill and wipe these instead of the shared stack, so the rest of the suite
(and other test runs on the machine) never sees the fault. They reuse the shared stack's
fetched Kafka jars and installed PostgreSQL; only the data and the ports are their own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import REPO_ROOT, free_port

STACK_SCRIPT = REPO_ROOT / "scripts" / "stack.sh"
SHARED_KAFKA_LIBS = REPO_ROOT / ".stack" / "kafka" / "libs"


@dataclass
class PrivateStack:
    """One stack.sh instance in ``directory`` on free loopback ports."""

    directory: Path
    kafka_port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    pg_port: int = field(default_factory=free_port)
    # secure=True adds SASL_PLAINTEXT, SSL (mutual TLS) and SASL_SSL listeners to the broker,
    # with the SCRAM/PLAIN user ``sasl_user`` and a CA of its own (stack.sh's kafka security).
    secure: bool = False
    sasl_port: int = field(default_factory=free_port)
    ssl_port: int = field(default_factory=free_port)
    sasl_ssl_port: int = field(default_factory=free_port)
    sasl_user: tuple[str, str] = ("orderstream", "orderstream-secret")
    # pg_tls=True starts PostgreSQL with ssl = on and a server certificate signed by a CA of
    # its own (stack.sh PG_TLS=on); pg_cert_user, a role that logs in with a client certificate.
    pg_tls: bool = False
    pg_cert_user: str = ""

    @property
    def kafka_brokers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def tls_dir(self) -> Path:
        """ca.pem (the CA the broker's certificate is signed by), client.pem and client.key."""
        return self.directory / "kafka" / "tls"

    def secure_env(self, protocol: str, mechanism: str = "SCRAM-SHA-256") -> dict[str, str]:
        """The service's settings for reaching this broker over ``protocol``."""
        port = {
            "PLAINTEXT": self.kafka_port,
            "SASL_PLAINTEXT": self.sasl_port,
            "SSL": self.ssl_port,
            "SASL_SSL": self.sasl_ssl_port,
        }[protocol]
        env = {"KAFKA_BROKERS": f"127.0.0.1:{port}", "KAFKA_SECURITY_PROTOCOL": protocol}
        if protocol.startswith("SASL_"):
            env.update(
                KAFKA_SASL_MECHANISM=mechanism,
                KAFKA_SASL_USERNAME=self.sasl_user[0],
                KAFKA_SASL_PASSWORD=self.sasl_user[1],
            )
        if protocol.endswith("SSL"):
            env["KAFKA_SSL_CAFILE"] = str(self.tls_dir / "ca.pem")
        if protocol == "SSL":
            env.update(
                KAFKA_SSL_CERTFILE=str(self.tls_dir / "client.pem"),
                KAFKA_SSL_KEYFILE=str(self.tls_dir / "client.key"),
            )
        return env

    @property
    def pg_url(self) -> str:
        return f"postgres://postgres:postgres@127.0.0.1:{self.pg_port}/orders?sslmode=disable"

    @property
    def pg_tls_dir(self) -> Path:
        """ca.crt (what clients trust), and client.crt, client.key for ``pg_cert_user``."""
        return self.directory / "pg-tls"

    def pg_tls_url(
        self,
        database: str = "orders",
        user: str = "postgres:postgres",
        host: str = "localhost",
        **params: str,
    ) -> str:
        """A PG_URL that checks the server's certificate (verify-full), plus ``params``."""
        query = "&".join(
            f"{name}={value}"
            for name, value in {
                "sslmode": "verify-full",
                "sslrootcert": str(self.pg_tls_dir / "ca.crt"),
                **params,
            }.items()
        )
        return f"postgres://{user}@{host}:{self.pg_port}/{database}?{query}"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "STACK_DIR": str(self.directory),
            "KAFKA_PORT": str(self.kafka_port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "PG_PORT": str(self.pg_port),
            "KAFKA_LIBS": str(SHARED_KAFKA_LIBS),
            **self._secure_stack_env(),
            **({"PG_TLS": "on", "PG_TLS_CERT_USER": self.pg_cert_user} if self.pg_tls else {}),
        }

    def _secure_stack_env(self) -> dict[str, str]:
        if not self.secure:
            return {}
        return {
            "KAFKA_SASL_PORT": str(self.sasl_port),
            "KAFKA_SSL_PORT": str(self.ssl_port),
            "KAFKA_SASL_SSL_PORT": str(self.sasl_ssl_port),
            "KAFKA_SASL_USERS": ":".join(self.sasl_user),
        }

    def run(self, command: str, timeout: float = 120) -> str:
        """Run ``stack.sh command``; a failure fails the test with the script's output."""
        done = subprocess.run(
            ["bash", str(STACK_SCRIPT), command],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"stack.sh {command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def kafka_up(self) -> None:
        self.run("kafka-start")

    def kafka_stop(self) -> None:
        self.run("kafka-stop")

    def kafka_kill(self) -> None:
        """SIGKILL the broker: no clean shutdown, as when its machine dies."""
        pid_file = self.directory / "kafka" / "kafka.pid"
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        # Its threads may still be closing sockets after the main one is a zombie.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (_alive(pid) or _listening(self.kafka_port)):
            time.sleep(0.05)
        pid_file.unlink()

    def kafka_wipe(self) -> None:
        """Stop the broker and delete all its data: a new, empty cluster on the same port."""
        self.kafka_stop()
        shutil.rmtree(self.directory / "kafka" / "data")

    def pg_up(self) -> None:
        self.run("pg-start")

    def pg_stop(self) -> None:
        self.run("pg-stop")

    def down(self) -> None:
        """Stop both and delete their data (PostgreSQL's may live under /var/tmp).

        The broker is killed, not stopped: its data goes anyway, and a clean stop after an
        outage test can take 20 s.
        """
        if (self.directory / "kafka" / "kafka.pid").is_file():
            with contextlib.suppress(ProcessLookupError):  # it died already
                self.kafka_kill()
        self.run("down")
        location = self.directory / "pg" / "location"
        if location.is_file():
            shutil.rmtree(location.read_text().strip(), ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class PrivateCluster:
    """A 3-node KRaft cluster (``stack.sh cluster-up``) in ``directory`` on free loopback ports."""

    directory: Path
    kafka_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    controller_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])

    @property
    def kafka_brokers(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.kafka_ports)

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "STACK_DIR": str(self.directory),
            "CLUSTER_KAFKA_PORTS": ",".join(map(str, self.kafka_ports)),
            "CLUSTER_CONTROLLER_PORTS": ",".join(map(str, self.controller_ports)),
            "KAFKA_LIBS": str(SHARED_KAFKA_LIBS),
        }

    def run(self, command: str, timeout: float = 120) -> str:
        """Run ``stack.sh command``; a failure fails the test with the script's output."""
        done = subprocess.run(
            ["bash", str(STACK_SCRIPT), command],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"stack.sh {command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def up(self) -> None:
        """Start the nodes that are not running (all of them the first time) and wait for them."""
        self.run("cluster-up")

    def kill(self, node: int) -> None:
        """SIGKILL node ``node`` (its Kafka node id, 1-3), as when its machine dies."""
        pid_file = self.directory / "cluster" / f"node-{node}" / "kafka.pid"
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        port = self.kafka_ports[node - 1]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (_alive(pid) or _listening(port)):
            time.sleep(0.05)
        pid_file.unlink()

    def down(self) -> None:
        """Kill every node (their data goes anyway) and delete the cluster's data."""
        for node in range(1, len(self.kafka_ports) + 1):
            if (self.directory / "cluster" / f"node-{node}" / "kafka.pid").is_file():
                with contextlib.suppress(ProcessLookupError):  # killed by the test already
                    self.kill(node)
        self.run("cluster-down")
        shutil.rmtree(self.directory, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of another process stays a zombie until reaped: dead all the same.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
