"""What a message or log line may show of a setting: secrets never, URLs without passwords."""

from __future__ import annotations

import re

SECRET_SUFFIXES = ("_PASSWORD", "_TOKEN", "_TOKENS")
MASK = "***"
_URL_PASSWORD_PARAMETER = re.compile(r"([?&](?:ssl)?password=)[^&#]*")


def mask_url(url: str) -> str:
    """The URL with its password (and any password=/sslpassword= parameter) as ***.

    Works on malformed URLs too, which is when they get printed: user:password@ is found
    by hand, not by a URL parser that may refuse the value.
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        query_at = rest.find("?")
        head, tail = (rest[:query_at], rest[query_at:]) if query_at >= 0 else (rest, "")
        userinfo, at, hosts = head.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if at and colon:
            rest = f"{user}:{MASK}@{hosts}{tail}"
        url = f"{scheme}{sep}{rest}"
    return _URL_PASSWORD_PARAMETER.sub(rf"\g<1>{MASK}", url)


def shown_value(name: str, value: str) -> str:
    """What a message may show of a setting's value: secrets never, URLs without passwords."""
    if name.endswith(SECRET_SUFFIXES):
        return MASK if value else value  # "required" errors may show that it is empty
    if name.endswith("_URL"):
        return mask_url(value)
    return value


def secrets_in(name: str, value: str) -> list[str]:
    """The parts of a value that must not be printed (for a URL: its passwords)."""
    if name.endswith(SECRET_SUFFIXES):
        return [part for part in (value, *value.split(",")) if part.strip()]
    found = []
    userinfo = value.partition("://")[2].partition("?")[0].rpartition("@")[0]
    if ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    found += [match.group(0).partition("=")[2] for match in _URL_PASSWORD_PARAMETER.finditer(value)]
    return sorted((secret for secret in found if secret), key=len, reverse=True)
