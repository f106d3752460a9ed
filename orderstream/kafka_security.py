"""How every Kafka client of the service reaches a secured broker: TLS and SASL from Settings.

One place turns KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* into what the clients
take: Faust's ``broker_credentials`` (its consumer and producer, hence the worker, `send` and
`produce`) and aiokafka keyword arguments (the batch producer, the watcher that shares its
client, the admin client of topics.py). ``check`` refuses combinations that cannot work at
start-up, naming the variable; no message here ever contains the password.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import faust
from faust.types.auth import CredentialsT

from .config import ConfigError, Settings

SSL_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


def check(settings: Settings) -> None:
    """Raise ConfigError (naming the variable) for a combination that cannot connect.

    SASL needs a user and a password; TLS files must exist and load; TLS or SASL settings
    given with a protocol that ignores them are refused, as the operator meant them to apply.
    """
    protocol = settings.kafka_security_protocol
    if protocol in SASL_PROTOCOLS:
        if not settings.kafka_sasl_username:
            raise ConfigError(
                "KAFKA_SASL_USERNAME", "", f"Required when KAFKA_SECURITY_PROTOCOL is {protocol}."
            )
        if not settings.kafka_sasl_password:
            raise ConfigError(
                "KAFKA_SASL_PASSWORD", "", f"Required when KAFKA_SECURITY_PROTOCOL is {protocol}."
            )
    elif settings.kafka_sasl_username or settings.kafka_sasl_password:
        name = "KAFKA_SASL_USERNAME" if settings.kafka_sasl_username else "KAFKA_SASL_PASSWORD"
        value = settings.kafka_sasl_username if settings.kafka_sasl_username else "***"
        raise ConfigError(
            name,
            value,
            f"Ignored with KAFKA_SECURITY_PROTOCOL={protocol}; "
            "use SASL_PLAINTEXT or SASL_SSL, or unset it.",
        )
    files = {
        "KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    for name, path in files.items():
        if not path:
            continue
        if protocol not in SSL_PROTOCOLS:
            raise ConfigError(
                name,
                path,
                f"Ignored with KAFKA_SECURITY_PROTOCOL={protocol}; "
                "use SSL or SASL_SSL, or unset it.",
            )
        if not Path(path).is_file():
            raise ConfigError(name, path, "No such file.")
    if settings.kafka_ssl_keyfile and not settings.kafka_ssl_certfile:
        raise ConfigError(
            "KAFKA_SSL_KEYFILE",
            settings.kafka_ssl_keyfile,
            "A key needs its certificate: set KAFKA_SSL_CERTFILE too.",
        )
    ssl_context(settings)  # unreadable PEM files fail here, naming the variable


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A client TLS context for SSL and SASL_SSL, None otherwise.

    It verifies the broker's certificate and host name against KAFKA_SSL_CAFILE, or the
    system's CAs when unset (managed Kafka services use public CAs); KAFKA_SSL_CERTFILE and
    KAFKA_SSL_KEYFILE are the client certificate for brokers that require one (mutual TLS).
    """
    if settings.kafka_security_protocol not in SSL_PROTOCOLS:
        return None
    cafile = settings.kafka_ssl_cafile or None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            "KAFKA_SSL_CAFILE",
            settings.kafka_ssl_cafile,
            f"Could not load the CA certificates: {exc}.",
        ) from exc
    if settings.kafka_ssl_certfile:
        try:
            # A callable password: an encrypted key fails here instead of prompting on a TTY.
            context.load_cert_chain(
                settings.kafka_ssl_certfile,
                settings.kafka_ssl_keyfile or None,
                password=_no_password,
            )
        except (ssl.SSLError, OSError) as exc:
            name = "KAFKA_SSL_KEYFILE" if settings.kafka_ssl_keyfile else "KAFKA_SSL_CERTFILE"
            raise ConfigError(
                name,
                settings.kafka_ssl_keyfile or settings.kafka_ssl_certfile,
                f"Could not load the client certificate and key ({exc}); they "
                "must be PEM, the key unencrypted and matching the certificate.",
            ) from exc
    return context


def _no_password() -> bytes:
    return b""


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials``: what its aiokafka driver turns into client arguments."""
    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    if protocol in SASL_PROTOCOLS:
        # With a context Faust's SASLCredentials speak SASL_SSL, without it SASL_PLAINTEXT.
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's producer, consumer and admin clients."""
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if protocol in SASL_PROTOCOLS:
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return kwargs
