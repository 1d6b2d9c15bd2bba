"""Where a webhook may go: HTTPS to a public address, never into the operator's own network.

A URL is checked when the merchant gives it (scheme, no credentials, no private or link-local
address literal) and its host is resolved again before every attempt, every address checked,
so a name that later points inward (or a numeric form like ``2130706433``) is refused too.
``DROPSHIP_OUTBOUND_ALLOW_HTTP`` lets an operator (or the tests) use ``http://`` and loopback
(``localhost``, ``127.0.0.1``, ``::1``) for a receiver on the same machine; nothing else private.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from urllib.parse import SplitResult, urlsplit

from app import limits
from app.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LOOPBACK_NAMES = ("localhost", "localhost.")
#: A last label that is a number: no DNS name (top-level domains are never numeric), but resolvers
#: read such hosts as addresses (``2130706433``, ``0x7f.1``, ``127.1`` are all 127.0.0.1).
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class TargetRefused(Exception):
    """The URL's host is (now) an address we do not send to."""


def _is_loopback_name(host: str) -> bool:
    return host in _LOOPBACK_NAMES or host.endswith(".localhost")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _allowed(ip: IPAddress, allow_loopback: bool) -> bool:
    if allow_loopback and ip.is_loopback:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_http: bool) -> str:
    """The endpoint URL if we may send to it; else ``InvalidInput`` naming ``url``."""

    def refuse(why: str) -> InvalidInput:
        return InvalidInput(why, field="url")

    if len(url) > limits.MAX_URL:
        raise refuse(f"at most {limits.MAX_URL} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise refuse("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number in range)
    except ValueError as exc:
        raise refuse(f"not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("https", "http"):
        raise refuse("must be an https:// URL")
    if not host:
        raise refuse("must name a host")
    if parts.username is not None or parts.password is not None:
        raise refuse("must not carry a user name or password (put credentials in the path)")
    if parts.fragment:
        raise refuse("must not have a #fragment")
    ip = _literal(host)
    loopback = _is_loopback_name(host) or (ip is not None and ip.is_loopback)
    if loopback and not allow_http:
        raise refuse("must not point at this machine (localhost, loopback)")
    if scheme == "http" and not (allow_http and loopback):
        raise refuse("must be an https:// URL")
    if ip is not None and not _allowed(ip, allow_http):
        raise refuse(f"must not point at a private, link-local or reserved address ({ip})")
    if ip is None and _NUMERIC_LABEL.match(host.rstrip(".").rpartition(".")[2]):
        raise refuse("not a valid address (write IPv4 addresses as four decimal numbers)")
    return url


async def check_target(url: str, *, allow_loopback: bool) -> None:
    """Resolve the URL's host now and refuse it if any address is not one we send to."""
    parts: SplitResult = urlsplit(url)
    host = parts.hostname or ""
    ip = _literal(host)
    if ip is not None:
        addresses: list[IPAddress] = [ip]
    else:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError) as exc:
            raise TargetRefused(f"cannot resolve {host}: {exc}") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        if not _allowed(address, allow_loopback):
            raise TargetRefused(f"{host} resolves to a private or reserved address ({address})")
