"""Where a webhook may go: an operator allowlist of hosts and ports, checked when a job is
submitted, and the address the host resolves to, checked (and then used as is) each time a call
is sent.

An allowlist entry is `<host>[:<port>[|<port>...]]`: `serverpod:8080`, `serverpod:8080|8081`,
`.example.com:443`, `[fd00::5]:8080`. Without ports an entry allows 80 and 443 only; a URL without
a port means its scheme's (80 for http, 443 for https). An exact name (`serverpod`) may resolve to
private addresses, as a compose service does; a suffix entry (`.example.com`) matches subdomains
that must resolve to public ones.

Loopback is refused unless the operator opts in for local development. Link-local, metadata,
unspecified, multicast and reserved addresses are always refused, in every spelling: the
resolver turns `127.1`, `2130706433`, `0x7f000001` or `::ffff:127.0.0.1` into the address itself,
and an IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4, Teredo) is judged by the IPv4
address it carries. The addresses of the gateway's own backends (Triton, Redis) are refused
whatever the allowlist says: a callback must never reach a model's control API.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

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
        "168.63.129.16",  # Azure's wire server: a public address, so is_global does not catch it
    )
)
# IPv6 ranges that carry an IPv4 address, and where: (right shift, XOR mask) of each IPv4 address
# in the 128-bit value. Our own table: Python's is_global calls 6to4 global and says nothing of
# what a Teredo or NAT64 address leads to.
IPV4_CARRIERS: tuple[tuple[ipaddress.IPv6Network, tuple[tuple[int, int], ...]], ...] = (
    (ipaddress.IPv6Network("::ffff:0:0/96"), ((0, 0),)),  # IPv4-mapped
    (ipaddress.IPv6Network("64:ff9b::/96"), ((0, 0),)),  # NAT64, well-known prefix
    # NAT64, local-use (RFC 8215): the operator's own prefix, the IPv4 address last, as in a /96
    (ipaddress.IPv6Network("64:ff9b:1::/48"), ((0, 0),)),
    (ipaddress.IPv6Network("2002::/16"), ((80, 0),)),  # 6to4: bits 16-48
    # Teredo: the server in bits 32-64, the client in the last 32 bits, inverted
    (ipaddress.IPv6Network("2001::/32"), ((64, 0), (0, 0xFFFFFFFF))),
)
SCHEME_PORTS = {"http": 80, "https": 443}
DEFAULT_PORTS = frozenset(SCHEME_PORTS.values())
# An allowlist entry: a name or a bracketed IPv6 address, then optionally ":" and ports joined by
# "|" (commas already separate the entries).
ENTRY = re.compile(
    r"(\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>[^:\[\]|/@]+))(:(?P<ports>[0-9]+(\|[0-9]+)*))?"
)
HOW_TO_ALLOW = (
    "the operator allows callback hosts with "
    "WEBHOOK_ALLOWED_HOSTS=<host>[:<port>[|<port>...]][,<host>...] (without ports: 80 and 443)"
)


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


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries (see IPV4_CARRIERS); none for any other."""
    if isinstance(address, ipaddress.IPv6Address):
        value = int(address)
        for network, positions in IPV4_CARRIERS:
            if address in network:
                return tuple(
                    ipaddress.IPv4Address(((value >> shift) & 0xFFFFFFFF) ^ mask)
                    for shift, mask in positions
                )
    return ()


def backend_hosts(urls: Iterable[str | None]) -> tuple[str, ...]:
    """The host of each backend address (`triton:8001`, `redis://redis:6379/0`); none for a
    socket path or an empty one."""
    hosts = []
    for url in urls:
        if url:
            host = urlsplit(url if "://" in url else f"//{url}").hostname
            if host:
                hosts.append(host)
    return tuple(hosts)


def url_port(parts: SplitResult) -> int | None:
    """The port a URL names, or its scheme's; None when it names an invalid one."""
    try:
        port = parts.port
    except ValueError:
        return None
    return SCHEME_PORTS.get(parts.scheme) if port is None else port


@dataclass(frozen=True)
class AllowedHost:
    """One allowlist entry: a name (or a `.suffix` for its subdomains) and the ports it allows."""

    name: str
    ports: frozenset[int] = DEFAULT_PORTS

    @classmethod
    def parse(cls, entry: str) -> AllowedHost:
        """`serverpod`, `serverpod:8080|8081`, `.example.com:443`, `[fd00::5]:8080`, `fd00::5`."""
        text = entry.strip().lower()
        if text.count(":") > 1 and not text.startswith("["):
            text = f"[{text}]"  # an IPv6 address without brackets, and so without ports
        found = ENTRY.fullmatch(text)
        name = (found["ipv6"] or found["name"]).removeprefix("*").rstrip(".") if found else ""
        ports = [int(p) for p in found["ports"].split("|")] if found and found["ports"] else []
        if not name.strip(".") or not all(0 < port < 65536 for port in ports):
            raise ValueError(
                f"WEBHOOK_ALLOWED_HOSTS entry {entry!r} is not <host>[:<port>[|<port>...]], "
                "e.g. serverpod, serverpod:8080|8081, .example.com:443 or [fd00::5]:8080"
            )
        return cls(name, frozenset(ports) or DEFAULT_PORTS)

    @property
    def suffix(self) -> bool:
        return self.name.startswith(".")

    def __str__(self) -> str:
        """The entry as the operator writes it."""
        if self.ports == DEFAULT_PORTS:
            return _bracketed(self.name)
        return f"{_bracketed(self.name)}:{'|'.join(str(p) for p in sorted(self.ports))}"

    def matches(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if self.suffix:
            return host.endswith(self.name) and host != self.name[1:]
        return host == self.name

    def url_pattern(self) -> str:
        """A regular expression of the URLs' start (scheme, host, port) this entry allows."""
        if self.suffix:
            host = r"[a-z0-9-]+(\.[a-z0-9-]+)*" + re.escape(self.name)
        else:
            host = re.escape(_bracketed(self.name))
        ports = "|".join(str(p) for p in sorted(self.ports))
        bare = [f"{scheme}://{host}" for scheme, p in SCHEME_PORTS.items() if p in self.ports]
        return "|".join([f"https?://{host}:({ports})", *bare])


def _bracketed(host: str) -> str:
    """A host as a URL's authority spells it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class PinnedTarget:
    """A callback request aimed at a checked address, with the original host in Host and SNI."""

    url: httpx.URL
    host_header: str
    extensions: dict[str, str]


def _pinned(parts: SplitResult, host: str, address: IPAddress) -> PinnedTarget:
    pinned = str(address) if address.version == 4 else f"[{address}]"
    netloc = pinned if parts.port is None else f"{pinned}:{parts.port}"
    target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    authority = _bracketed(host)
    host_header = authority if parts.port is None else f"{authority}:{parts.port}"
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return PinnedTarget(httpx.URL(target), host_header, extensions)


class CallbackPolicy:
    """The operator's allowlist, the loopback opt-in, and the backends no callback may reach."""

    def __init__(
        self,
        allowed_hosts: Sequence[str] = (),
        allow_loopback: bool = False,
        *,
        backend_hosts: Sequence[str] = (),
        resolver: Resolver = resolve,
    ) -> None:
        self.allowed = tuple(AllowedHost.parse(e) for e in allowed_hosts if e.strip())
        self.allow_loopback = allow_loopback
        self.backend_hosts = tuple(backend_hosts)
        self.resolver = resolver

    def check_url(self, url: str) -> str:
        """At submit: an absolute http(s) URL whose host and port the operator allows; else 422."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:  # e.g. "http://[": an unclosed IPv6 literal
            host = None
        port = url_port(parts) if host else None
        if not host or parts.scheme not in SCHEME_PORTS or port is None:
            raise ApiError(
                ErrorCode.INVALID_CALLBACK_URL,
                "callback_url must be an absolute http:// or https:// URL",
                detail={"field": "callback_url"},
            )
        if not self.allowed:
            raise ApiError(
                ErrorCode.CALLBACK_NOT_ALLOWED,
                f"this gateway sends no webhooks: {HOW_TO_ALLOW}",
                detail={"field": "callback_url"},
            )
        if self.match(host, port) is None:
            raise ApiError(
                ErrorCode.CALLBACK_NOT_ALLOWED,
                self._not_allowed(host, port),
                detail={"field": "callback_url"},
            )
        return url

    def _not_allowed(self, host: str, port: int) -> str:
        entry = next((e for e in self.allowed if e.matches(host)), None)
        if entry is None:
            return f"the callback host {host!r} is not allowed: {HOW_TO_ALLOW}"
        wider = AllowedHost(entry.name, entry.ports | {port})
        return (
            f"port {port} is not allowed for the callback host {host!r}: the operator allows it "
            f"with WEBHOOK_ALLOWED_HOSTS={wider} (an entry without ports allows 80 and 443)"
        )

    def match(self, host: str, port: int) -> str | None:
        """'exact' or 'suffix' for an allowed host and port, None otherwise. An exact entry wins."""
        entries = [e for e in self.allowed if port in e.ports and e.matches(host)]
        if not entries:
            return None
        return "suffix" if all(e.suffix for e in entries) else "exact"

    def refusal(self, address: IPAddress, *, exact: bool) -> str | None:
        """Why a callback must not go to this address, or None when it may. An IPv6 address that
        carries IPv4 ones is judged by each of those."""
        carried = embedded_ipv4(address)
        if not carried:
            return self._refusal(address, exact=exact)
        for ipv4 in carried:
            why = self._refusal(ipv4, exact=exact)
            if why is not None:
                return f"{why} ({ipv4}, inside {address})"
        return None

    def _refusal(self, address: IPAddress, *, exact: bool) -> str | None:
        if address.is_loopback:  # before the reserved ranges: ::1 lies in ::/8
            return None if self.allow_loopback else "a loopback address"
        checks = (
            (address in METADATA_ADDRESSES, "a cloud metadata address"),
            (address.is_unspecified, "an unspecified address"),
            (address.is_multicast, "a multicast address"),
            (address.is_link_local, "a link-local address"),
            (address.is_reserved, "a reserved address"),
        )
        for refused, why in checks:
            if refused:
                return why
        if not address.is_global and not exact:
            return "a private address (only a host listed by its exact name may be private)"
        return None

    async def backend_addresses(self) -> frozenset[IPAddress]:
        """Every address the gateway's own backends resolve to now, and the IPv4 ones inside."""
        found: set[IPAddress] = set()
        for host in self.backend_hosts:
            try:
                answers = await self.resolver(host, 0)
            except CallbackRefused:
                # A backend name that does not resolve now (a Triton pod scaled away) leads
                # nowhere, so there is no address of it to keep callbacks off.
                continue
            for answer in answers:
                address = ipaddress.ip_address(answer)
                found.update((address, *embedded_ipv4(address)))
        return frozenset(found)

    async def pin(self, url: str) -> PinnedTarget:
        """At send time: resolve the host, refuse forbidden addresses, aim at the first one."""
        parts = urlsplit(url)
        host, port = parts.hostname or "", url_port(parts) or 0
        kind = self.match(host, port)
        if kind is None:
            raise CallbackRefused(f"the callback host {host!r} is not allowed on port {port}")
        addresses = [ipaddress.ip_address(a) for a in await self.resolver(host, port)]
        if not addresses:
            raise CallbackRefused(f"the callback host {host!r} does not resolve")
        backends = await self.backend_addresses()
        for address in addresses:
            why = self.refusal(address, exact=kind == "exact")
            if why is None and backends.intersection((address, *embedded_ipv4(address))):
                why = "an address of the gateway's own backends (Triton or Redis)"
            if why is not None:
                raise CallbackRefused(f"the callback host {host!r} resolves to {why}")
        return _pinned(parts, host, addresses[0])
