"""The SSRF guard: names that resolve to private and loopback addresses, literals in every refused
range, an injected resolver, allow-lists, and pinning the connection to the checked address."""

from __future__ import annotations

import httpx
import pytest

from conveyor.errors import UnsafeURLError
from conveyor.handlers.ssrf import AllowList, SsrfGuard, guarded_client, send_following
from tests.handlers.servers import Receiver

REFUSED = [
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "127.0.0.1",
    "127.8.8.8",
    "0.0.0.0",
    "169.254.169.254",
    "100.64.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.10",
    "[::1]",
    "[::]",
    "[fe80::1]",
    "[fc00::1]",
    "[ff02::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:10.0.0.1]",
]


def resolver_for(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


@pytest.mark.parametrize("host", REFUSED)
async def test_literal_addresses_outside_the_public_internet_are_refused(host: str) -> None:
    with pytest.raises(UnsafeURLError, match="refusing"):
        await SsrfGuard().check(f"http://{host}:8080/hook")


async def test_names_resolving_to_loopback_are_refused_through_the_system_resolver() -> None:
    with pytest.raises(UnsafeURLError, match="loopback"):
        await SsrfGuard().check("http://localhost/hook")
    with pytest.raises(UnsafeURLError, match="cannot resolve"):
        await SsrfGuard().check("http://does-not-exist.invalid/hook")


async def test_a_name_with_any_private_address_is_refused() -> None:
    guard = SsrfGuard(
        resolver=resolver_for(
            {
                "internal.example": ["10.0.0.7"],
                "mixed.example": ["93.184.216.34", "192.168.0.9"],
                "public.example": ["93.184.216.34", "2606:4700::1"],
            }
        )
    )
    with pytest.raises(UnsafeURLError, match=r"10\.0\.0\.7, a private address"):
        await guard.check("https://internal.example/x")
    with pytest.raises(UnsafeURLError, match=r"192\.168\.0\.9"):
        await guard.check("https://mixed.example/x")
    target = await guard.check("https://public.example/x")
    assert (target.host, target.port, target.ip) == ("public.example", 443, "93.184.216.34")


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://x/", "//x/y"])
async def test_only_http_and_https(url: str) -> None:
    with pytest.raises(UnsafeURLError, match="only http and https"):
        await SsrfGuard().check(url)


async def test_allow_list_by_host_and_by_network() -> None:
    by_host = SsrfGuard(AllowList.parse("localhost"))
    assert (await by_host.check("http://localhost:9/x")).ip in {"127.0.0.1", "::1"}
    by_net = SsrfGuard(AllowList.parse(" 10.0.0.0/8 , ::1 "), resolver_for({"svc.internal": ["10.9.9.9"]}))
    assert (await by_net.check("http://svc.internal/x")).ip == "10.9.9.9"
    assert (await by_net.check("http://[::1]:81/x")).ip == "::1"
    with pytest.raises(UnsafeURLError):
        await by_net.check("http://192.168.0.1/x")


async def test_the_connection_goes_to_the_checked_address_with_the_host_kept(receiver: Receiver) -> None:
    """`hooks.customer.test` resolves (through the injected resolver) to the local receiver: the request
    reaches it by the pinned IP while the Host header still names the customer's host."""
    receiver.files["/ping"] = (b"pong", "text/plain")
    guard = SsrfGuard(AllowList.parse("127.0.0.0/8"), resolver_for({"hooks.customer.test": ["127.0.0.1"]}))
    async with guarded_client(guard, 5) as client:
        response, hops = await send_following(client, "GET", f"http://hooks.customer.test:{receiver.port}/ping")
        body = await response.aread()
        await response.aclose()
    assert body == b"pong" and hops == []
    assert str(response.request.url).startswith("http://hooks.customer.test:")


async def test_redirects_are_checked_hop_by_hop(receiver: Receiver) -> None:
    guard = SsrfGuard(AllowList.parse("127.0.0.1"))
    receiver.files["/final"] = (b"done", "text/plain")
    receiver.answer("/r1", (302, {"Location": "/r2"}, b""))
    receiver.answer("/r2", (307, {"Location": f"{receiver.url}/final"}, b""))
    receiver.answer("/evil", (302, {"Location": "http://169.254.169.254/latest/meta-data"}, b""))
    for i in range(5):
        receiver.answer(f"/loop{i}", (302, {"Location": f"/loop{i + 1}"}, b""))
    async with guarded_client(guard, 5) as client:
        response, hops = await send_following(client, "GET", f"{receiver.url}/r1")
        assert await response.aread() == b"done"
        await response.aclose()
        assert hops == [f"{receiver.url}/r2", f"{receiver.url}/final"]
        with pytest.raises(UnsafeURLError, match=r"169\.254\.169\.254"):
            await send_following(client, "GET", f"{receiver.url}/evil")
        with pytest.raises(UnsafeURLError, match="more than 3 redirects"):
            await send_following(client, "GET", f"{receiver.url}/loop0")


async def test_environment_proxies_are_ignored(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    receiver.files["/x"] = (b"direct", "text/plain")
    async with guarded_client(SsrfGuard(AllowList.parse("127.0.0.1")), 5) as client:
        response = await client.get(f"{receiver.url}/x")
    assert response.content == b"direct"
    assert isinstance(client, httpx.AsyncClient)
