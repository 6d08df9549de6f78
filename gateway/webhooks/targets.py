"""Where a webhook may go: an operator allowlist, checked when a job is submitted, and the
address the host resolves to, checked (and then used as is) each time a call is sent.

An exact name on the list (`serverpod`) may resolve to private addresses, as a compose service
does; a suffix entry (`.example.com`) matches subdomains that must resolve to public ones.
Loopback is refused unless the operator opts in for local development. Link-local, metadata,
unspecified, multicast and reserved addresses are always refused, in every spelling: the
resolver turns `127.1`, `2130706433`, `0x7f000001` or `::ffff:127.0.0.1` into the address itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from gateway.errors import ApiError, ErrorCode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
HOW_TO_ALLOW = "the operator allows callback hosts with WEBHOOK_ALLOWED_HOSTS=<host>[,<host>...]"


class CallbackRefused(Exception):
    """A callback that must not be sent; the message says why."""


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to now (the system resolver, off the event loop)."""
    loop = asyncio.get_running_loop()
    try:
        answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise CallbackRefused(f"the callback host {host!r} does not resolve") from exc
    return [str(sockaddr[0]).split("%")[0] for *_, sockaddr in answers]


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped or NAT64 IPv6 address, or the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


@dataclass(frozen=True)
class PinnedTarget:
    """A callback request aimed at a checked address, with the original host in Host and SNI."""

    url: httpx.URL
    host_header: str
    extensions: dict[str, str]


@dataclass(frozen=True)
class CallbackPolicy:
    allowed_hosts: Sequence[str] = ()
    allow_loopback: bool = False
    resolver: Resolver = resolve

    def check_url(self, url: str) -> str:
        """At submit: an absolute http(s) URL whose host the operator allows; else 422."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise ApiError(
                ErrorCode.INVALID_CALLBACK_URL,
                "callback_url must be an absolute http:// or https:// URL",
                detail={"field": "callback_url"},
            )
        if not self.allowed_hosts:
            raise ApiError(
                ErrorCode.CALLBACK_NOT_ALLOWED,
                f"this gateway sends no webhooks: {HOW_TO_ALLOW}",
                detail={"field": "callback_url"},
            )
        if self.match(parts.hostname) is None:
            raise ApiError(
                ErrorCode.CALLBACK_NOT_ALLOWED,
                f"the callback host {parts.hostname!r} is not allowed: {HOW_TO_ALLOW}",
                detail={"field": "callback_url"},
            )
        return url

    def match(self, host: str) -> str | None:
        """'exact' or 'suffix' for an allowed host, None otherwise."""
        host = host.lower().rstrip(".")
        for entry in (e.lower().strip() for e in self.allowed_hosts):
            suffix = entry.removeprefix("*")
            if suffix.startswith(".") and host.endswith(suffix) and host != suffix[1:]:
                return "suffix"
            if host == entry.rstrip("."):
                return "exact"
        return None

    def refusal(self, address: IPAddress, *, exact: bool) -> str | None:
        """Why a callback must not go to this address, or None when it may."""
        address = _embedded_ipv4(address)
        checks = (
            (address in METADATA_ADDRESSES, "a cloud metadata address"),
            (address.is_loopback and not self.allow_loopback, "a loopback address"),
            (address.is_unspecified, "an unspecified address"),
            (address.is_multicast, "a multicast address"),
            (address.is_link_local, "a link-local address"),
            (address.is_reserved, "a reserved address"),
        )
        for refused, why in checks:
            if refused:
                return why
        if not address.is_global and not address.is_loopback and not exact:
            return "a private address (only a host listed by its exact name may be private)"
        return None

    async def pin(self, url: str) -> PinnedTarget:
        """At send time: resolve the host, refuse forbidden addresses, aim at the first one."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        kind = self.match(host)
        if kind is None:
            raise CallbackRefused(f"the callback host {host!r} is not allowed")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = [ipaddress.ip_address(a) for a in await self.resolver(host, port)]
        if not addresses:
            raise CallbackRefused(f"the callback host {host!r} does not resolve")
        for address in addresses:
            why = self.refusal(address, exact=kind == "exact")
            if why is not None:
                raise CallbackRefused(f"the callback host {host!r} resolves to {why}")
        pinned = str(addresses[0]) if addresses[0].version == 4 else f"[{addresses[0]}]"
        netloc = pinned if parts.port is None else f"{pinned}:{parts.port}"
        target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        return PinnedTarget(httpx.URL(target), host_header, extensions)
