"""SSRF guard: outbound requests may reach only public http(s) addresses, unless allow-listed.

The hostname is resolved once, every address it resolves to is checked, and the connection is made
to the checked address (the URL's host stays in the Host header and TLS SNI/verification), so a DNS
answer that changes between check and connect (rebinding) cannot redirect the request. Redirects
are followed by hand and each hop goes through the same check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import httpx

from conveyor.errors import UnsafeURLError

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
DEFAULT_MAX_REDIRECTS = 3
_SCHEMES = {"http": 80, "https": 443}


async def system_resolver(host: str, port: int) -> list[str]:
    """Addresses of `host` from the system resolver (getaddrinfo)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeURLError(f"cannot resolve host {host!r}: {exc}") from None
    return [str(info[4][0]) for info in infos]


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why an address may not be reached without an allow-list entry (None: it is public)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return forbidden_reason(ip.ipv4_mapped)
    checks = (
        ("loopback", ip.is_loopback),
        ("private", ip.is_private),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("unspecified", ip.is_unspecified),
    )
    for name, hit in checks:
        if hit:
            return name
    if not ip.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True, slots=True)
class AllowList:
    """Hosts (exact names or literal IPs) and networks that may be reached although not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: str | Iterable[str]) -> AllowList:
        items = entries.split(",") if isinstance(entries, str) else list(entries)
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in items:
            item = raw.strip().lower()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_ip(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.networks)


@dataclass(frozen=True, slots=True)
class Target:
    """A checked destination: the URL as given and the address to connect to."""

    url: httpx.URL
    host: str
    port: int
    ip: str


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


@dataclass(slots=True)
class SsrfGuard:
    """Checks URLs; `resolver` is injectable so tests can point names at any address, and
    `tls_context` replaces the system CA store for HTTPS (certificates are always verified)."""

    allow: AllowList = field(default_factory=AllowList)
    resolver: Resolver = system_resolver
    tls_context: ssl.SSLContext | None = None

    async def check(self, url: httpx.URL | str) -> Target:
        u = httpx.URL(str(url)) if isinstance(url, str) else url
        scheme = u.scheme.lower()
        if scheme not in _SCHEMES:
            raise UnsafeURLError(f"only http and https URLs may be fetched, not {scheme or 'no scheme'!r}")
        host = u.host
        if not host:
            raise UnsafeURLError("the URL has no host")
        port = u.port or _SCHEMES[scheme]
        literal = _literal(host)
        addresses = [str(literal)] if literal is not None else await self.resolver(host, port)
        if not addresses:
            raise UnsafeURLError(f"host {host!r} resolved to no address")
        host_allowed = self.allow.allows_host(host)
        for address in addresses:
            ip = _literal(address)
            if ip is None:
                raise UnsafeURLError(f"host {host!r} resolved to an unparsable address {address!r}")
            reason = forbidden_reason(ip)
            if reason and not host_allowed and not self.allow.allows_ip(ip):
                raise UnsafeURLError(
                    f"refusing {host!r}: it resolves to {ip}, a {reason} address "
                    "(allow it in CONVEYOR_WEBHOOK_ALLOW_HOSTS if intended)"
                )
        return Target(u, host, port, str(_literal(addresses[0])))


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks every request and connects to the checked address."""

    def __init__(self, guard: SsrfGuard, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.guard = guard
        self.inner = inner or httpx.AsyncHTTPTransport(retries=0, verify=guard.tls_context or True)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = await self.guard.check(request.url)
        extensions = dict(request.extensions)
        if request.url.scheme == "https":
            extensions["sni_hostname"] = target.host
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=target.ip),
            headers=request.headers,
            stream=request.stream,
            extensions=extensions,
        )
        return await self.inner.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self.inner.aclose()


def guarded_client(guard: SsrfGuard, timeout_s: float) -> httpx.AsyncClient:
    """A client that goes only where the guard allows; proxies from the environment are ignored."""
    return httpx.AsyncClient(
        transport=GuardedTransport(guard),
        timeout=timeout_s,
        follow_redirects=False,
        trust_env=False,
    )


async def send_following(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
) -> tuple[httpx.Response, list[str]]:
    """Send and follow up to `max_redirects` redirects by hand, re-checking each hop.

    The returned response is streamed: the caller reads (with a size cap) and closes it. Redirected
    POSTs are re-sent with the same body (a webhook must arrive with its signed payload or not at all).
    """
    current = httpx.URL(url)
    hops: list[str] = []
    while True:
        request = client.build_request(method, current, content=content, headers=headers)
        response = await client.send(request, stream=True)
        location = response.headers.get("location")
        if response.status_code not in REDIRECT_CODES or not location:
            return response, hops
        await response.aclose()
        if len(hops) >= max_redirects:
            raise UnsafeURLError(f"more than {max_redirects} redirects, last to {location[:200]!r}")
        current = current.join(location)
        hops.append(str(current))


async def read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of the body and whether more was there (the rest is not downloaded)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False
