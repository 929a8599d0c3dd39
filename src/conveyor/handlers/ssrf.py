"""SSRF guard: outbound requests may reach only public http(s) addresses, unless allow-listed.

The hostname is resolved once, every address it resolves to is checked, and the connection is made
to the checked address (the URL's host stays in the Host header and TLS SNI/verification), so a DNS
answer that changes between check and connect (rebinding) cannot redirect the request. Redirects
are followed by hand and each hop goes through the same check; proxies from the environment are
never used. A resolver failure is either temporary (`NameResolutionError`: the job is retried) or
final (`UnsafeURLError`: the name does not exist), see `TEMPORARY_RESOLVER_ERRORS`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

import httpx

from conveyor.errors import NameResolutionError, UnsafeURLError
from conveyor.handlers.addresses import IPAddress, forbidden_reason, parse_address
from conveyor.handlers.bodies import ACCEPT_ENCODING

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
DEFAULT_MAX_REDIRECTS = 3
_SCHEMES = {"http": 80, "https": 443}


async def system_resolver(host: str, port: int) -> list[str]:
    """Addresses of `host` from the system resolver (getaddrinfo); its `socket.gaierror` propagates."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# getaddrinfo errors that say "the resolver could not answer now", not "the name does not exist":
# EAI_AGAIN (SERVFAIL, timeout, no server reachable), EAI_FAIL (the server refused or could not parse
# the query), EAI_MEMORY and EAI_SYSTEM (a local failure). Every other code is final.
TEMPORARY_RESOLVER_ERRORS = frozenset(
    getattr(socket, name) for name in ("EAI_AGAIN", "EAI_FAIL", "EAI_MEMORY", "EAI_SYSTEM") if hasattr(socket, name)
)


def resolution_error(host: str, exc: socket.gaierror) -> NameResolutionError | UnsafeURLError:
    """A resolver failure as the error the handlers retry (temporary) or fail on (the name is unknown)."""
    detail = exc.strerror or str(exc)
    if exc.errno in TEMPORARY_RESOLVER_ERRORS:
        return NameResolutionError(f"temporary DNS failure resolving {host!r}: {detail}")
    return UnsafeURLError(f"cannot resolve host {host!r}: {detail}")


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


@dataclass(slots=True)
class SsrfGuard:
    """Checks URLs; `resolver` is injectable (an async `(host, port) -> [addresses]` that raises
    `socket.gaierror` as getaddrinfo does), and `tls_context` replaces the system CA store for HTTPS
    (certificates are always verified)."""

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
        port = _SCHEMES[scheme] if u.port is None else u.port
        if not 0 < port < 65536:
            raise UnsafeURLError(f"port {port} is not a TCP port")
        literal = parse_address(host)
        addresses = [str(literal)] if literal is not None else await self._resolve(host, port)
        if not addresses:
            raise UnsafeURLError(f"host {host!r} resolved to no address")
        host_allowed = self.allow.allows_host(host)
        for address in addresses:
            ip = parse_address(address)
            if ip is None:
                raise UnsafeURLError(f"host {host!r} resolved to an unparsable address {address!r}")
            reason = forbidden_reason(ip)
            if reason and not host_allowed and not self.allow.allows_ip(ip):
                raise UnsafeURLError(
                    f"refusing {host!r}: it resolves to {ip}, {reason} "
                    "(allow it in CONVEYOR_WEBHOOK_ALLOW_HOSTS if intended)"
                )
        return Target(u, host, port, str(parse_address(addresses[0])))

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            return await self.resolver(host, port)
        except socket.gaierror as exc:
            raise resolution_error(host, exc) from None
        except UnicodeError as exc:  # getaddrinfo's IDNA encoding: a label over 63 characters, or empty
            raise UnsafeURLError(f"host {host[:100]!r} is not a valid host name: {exc}") from None


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
    """A client that goes only where the guard allows; proxies from the environment are ignored.
    Read what it fetches with `conveyor.handlers.bodies` (its decompression is bounded)."""
    return httpx.AsyncClient(
        transport=GuardedTransport(guard),
        headers={"Accept-Encoding": ACCEPT_ENCODING},
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
    private: Collection[str] = (),
) -> tuple[httpx.Response, list[str]]:
    """Send and follow up to `max_redirects` redirects by hand, re-checking each hop.

    The returned response is streamed: the caller reads (with a size cap) and closes it. A redirected
    request is re-sent with the same method and body (webhook deliveries do not come here: a signed
    body goes only to the URL it was signed for). Credentials (`Authorization`, `Cookie`) are
    dropped once a redirect leaves the URL's origin, as browsers and httpx do: they were meant for
    the origin the job named. So are the headers named in `private` (any case): the caller's headers
    that may carry credentials under other names.
    """
    current = httpx.URL(url)
    hops: list[str] = []
    sent = dict(headers or {})
    while True:
        request = client.build_request(method, current, content=content, headers=sent)
        response = await client.send(request, stream=True)
        location = response.headers.get("location")
        if response.status_code not in REDIRECT_CODES or not location:
            return response, hops
        await response.aclose()
        if len(hops) >= max_redirects:
            raise UnsafeURLError(f"more than {max_redirects} redirects, last to {location[:200]!r}")
        following = current.join(location)
        if _origin(following) != _origin(current):
            dropped = _CREDENTIALS | {name.lower() for name in private}
            sent = {k: v for k, v in sent.items() if k.lower() not in dropped}
        current = following
        hops.append(str(current))


_CREDENTIALS = frozenset({"authorization", "cookie"})


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    scheme = url.scheme.lower()
    return scheme, url.host.lower(), url.port or _SCHEMES.get(scheme)
