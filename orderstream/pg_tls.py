"""PG_URL's libpq TLS parameters, honoured by the worker (asyncpg) as `migrate` (libpq) does.

asyncpg reads most of them (sslmode, sslrootcert, sslcert, sslkey, sslpassword, sslcrl,
ssl_min/max_protocol_version, sslnegotiation) but not sslrootcert=system, sslcrldir,
sslcertmode, sslsni, sslkeylogfile or sslcompression: those it would send to the server as
settings, and the connection would fail. So when PG_URL makes TLS mandatory (sslmode require,
verify-ca or verify-full) the worker builds the SSLContext itself, from all of them, with
libpq's meaning (https://www.postgresql.org/docs/current/libpq-connect.html), and hands
asyncpg the context and the URL without them. With a weaker sslmode (disable, allow, prefer:
no certificate is checked) asyncpg reads PG_URL as it is, minus the parameters it cannot.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

# Every TLS parameter of libpq 18.
TLS_PARAMETERS = frozenset(
    {
        "sslmode",
        "sslnegotiation",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslcertmode",
        "sslpassword",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "sslkeylogfile",
    }
)
# Those asyncpg does not know: it would send them to the server as run-time settings.
UNKNOWN_TO_ASYNCPG = frozenset(
    {"sslcompression", "sslcertmode", "sslcrldir", "sslsni", "sslkeylogfile"}
)
MANDATORY_MODES = ("require", "verify-ca", "verify-full")
TLS_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
# libpq's defaults, used when PG_URL names no file.
HOME_FILES = Path.home() / ".postgresql"


class TlsSettingError(ValueError):
    """A TLS parameter of PG_URL cannot be used (bad value, unreadable file)."""


def asyncpg_arguments(pg_url: str) -> tuple[str, ssl.SSLContext | None]:
    """The DSN and SSL context to give asyncpg for PG_URL (no context: asyncpg decides)."""
    parts = urlsplit(pg_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    tls = {name: value for name, value in query if name in TLS_PARAMETERS}
    mode = tls.get("sslmode") or ("verify-full" if tls.get("sslrootcert") == "system" else "")
    if mode and mode not in ("disable", "allow", "prefer", *MANDATORY_MODES):
        raise TlsSettingError(
            f"sslmode={mode}: expected disable, allow, prefer, require, verify-ca or verify-full"
        )
    if mode in MANDATORY_MODES:
        context: ssl.SSLContext | None = tls_context({**tls, "sslmode": mode})
        # asyncpg still reads sslnegotiation (direct TLS) from the URL beside a context.
        dropped = TLS_PARAMETERS - {"sslnegotiation"}
    else:
        context, dropped = None, UNKNOWN_TO_ASYNCPG
    kept = urlencode([(name, value) for name, value in query if name not in dropped])
    return urlunsplit(parts._replace(query=kept)), context


def tls_context(tls: Mapping[str, str]) -> ssl.SSLContext:
    """An SSLContext for sslmode require, verify-ca or verify-full, as libpq would set it up."""
    mode = tls["sslmode"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # set below, once verify_mode allows it
    context.verify_mode = ssl.CERT_NONE
    root = tls.get("sslrootcert") or _home_file("root.crt")
    if root == "system":
        if mode != "verify-full":
            raise TlsSettingError("sslrootcert=system needs sslmode=verify-full (as in libpq)")
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        context.verify_mode = ssl.CERT_REQUIRED
    elif root:
        _load("sslrootcert", root, lambda: context.load_verify_locations(cafile=root))
        # libpq: with a root certificate, require checks the chain as verify-ca does.
        context.verify_mode = ssl.CERT_REQUIRED
    elif mode != "require":
        raise TlsSettingError(
            f"sslmode={mode} needs sslrootcert=<CA file> (or ~/.postgresql/root.crt)"
        )
    context.check_hostname = mode == "verify-full"
    _load_revocations(context, tls)
    _load_client_certificate(context, tls)
    if tls.get("sslsni", "1") != "1":
        raise TlsSettingError(
            "sslsni=0 is not supported by the worker's driver (asyncpg sends "
            "the host name whenever it is not an IP address)"
        )
    context.minimum_version = _tls_version(tls, "ssl_min_protocol_version", "TLSv1.2")
    if tls.get("ssl_max_protocol_version"):
        context.maximum_version = _tls_version(tls, "ssl_max_protocol_version", "")
    if tls.get("sslkeylogfile"):
        context.keylog_filename = tls["sslkeylogfile"]
    # sslcompression is accepted and ignored, as libpq does: OpenSSL no longer compresses.
    context.set_alpn_protocols(["postgresql"])
    return context


def _load_revocations(context: ssl.SSLContext, tls: Mapping[str, str]) -> None:
    crl = tls.get("sslcrl") or _home_file("root.crl")
    if crl:
        _load("sslcrl", crl, lambda: context.load_verify_locations(cafile=crl))
    crldir = tls.get("sslcrldir", "")
    if crldir:
        # A hashed directory (openssl rehash): OpenSSL looks CRLs up in it as libpq's does.
        _load("sslcrldir", crldir, lambda: context.load_verify_locations(capath=crldir))
    if crl or crldir:
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN


def _load_client_certificate(context: ssl.SSLContext, tls: Mapping[str, str]) -> None:
    certmode = tls.get("sslcertmode", "allow")
    if certmode not in ("disable", "allow", "require"):
        raise TlsSettingError(f"sslcertmode={certmode}: expected disable, allow or require")
    if certmode == "require":
        raise TlsSettingError(
            "sslcertmode=require is not supported by the worker's driver; "
            "use allow with sslcert and sslkey"
        )
    cert = tls.get("sslcert") or _home_file("postgresql.crt")
    if certmode == "disable" or not cert:
        return
    key = tls.get("sslkey") or _home_file("postgresql.key") or None
    # An encrypted key without sslpassword fails instead of prompting on a terminal.
    password = tls.get("sslpassword", "")
    _load("sslcert", cert, lambda: context.load_cert_chain(cert, key, password=lambda: password))


def _tls_version(tls: Mapping[str, str], name: str, default: str) -> ssl.TLSVersion:
    value = tls.get(name) or default
    if value not in TLS_VERSIONS:
        raise TlsSettingError(f"{name}={value}: expected one of {', '.join(TLS_VERSIONS)}")
    return TLS_VERSIONS[value]


def _home_file(name: str) -> str:
    path = HOME_FILES / name
    return str(path) if path.is_file() else ""


def _load(name: str, path: str, load: Callable[[], None]) -> None:
    """Load a file into the context; a missing or broken one names its PG_URL parameter."""
    try:
        load()
    except OSError as exc:  # ssl.SSLError is an OSError
        raise TlsSettingError(f"{name}={path} cannot be used: {exc.strerror or exc}") from exc


class TlsHandshakeFailed(ConnectionError):
    """PostgreSQL's certificate (or ours) was refused: PG_URL's TLS parameters are at stake.

    A ConnectionError, so the repository retries it as any other outage: a server's
    certificate can be replaced while the worker waits.
    """


async def connect_naming_tls(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """asyncpg.connect, with a failed TLS handshake saying which setting to look at."""
    try:
        return await asyncpg.connect(*args, **kwargs)
    except ssl.SSLError as exc:
        raise TlsHandshakeFailed(
            f"TLS with PostgreSQL failed (check PG_URL's sslmode, sslrootcert, sslcert, "
            f"sslkey): {getattr(exc, 'verify_message', '') or exc.reason or exc}"
        ) from exc
