"""The SSRF guard: every form of a loopback, private or otherwise non-public address (including the
IPv6 forms that embed an IPv4 address) is refused before a connection is made, checked against real
servers on 127.0.0.1 and [::1] that the same URLs reach when no guard is in the way; names that
resolve to such addresses, an injected resolver, allow-lists, and pinning to the checked address."""

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
    "127.8.8.8",
    "169.254.169.254",
    "100.64.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.10",
    "[fe80::1]",
    "[fc00::1]",
    "[fec0::1]",
    "[ff02::1]",
    "[::ffff:10.0.0.1]",
    "[2002:a00:1::]",  # 6to4 of 10.0.0.1
    "[2002:a9fe:a9fe::]",  # 6to4 of 169.254.169.254 (cloud metadata)
    "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
    "[64:ff9b:1::808:808]",  # local-use NAT64 prefix
    "[2001:0:a00:1:8000:63bf:f7f7:f7f7]",  # Teredo, server 10.0.0.1
    "[::808:808]",  # IPv4-compatible (deprecated)
]
# Forms of the loopback address: without a guard each of these reaches the local servers below.
LOOPBACK_V4 = ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "017700000001", "0.0.0.0", "localhost",
               "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"]
LOOPBACK_V6 = ["[::1]", "[::]", "[0:0:0:0:0:0:0:1]"]
# IPv6 forms that embed 127.0.0.1: not routed here, refused because a relay or gateway would deliver them.
EMBEDDED_LOOPBACK = [
    "[2002:7f00:1::]",  # 6to4
    "[64:ff9b::7f00:1]",  # NAT64, well-known prefix
    "[64:ff9b:1::7f00:1]",  # NAT64, local-use prefix
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo, client 127.0.0.1
    "[::7f00:1]",  # IPv4-compatible
    "[::ffff:0:7f00:1]",  # IPv4-translated
]


async def test_every_loopback_form_is_refused_before_connecting(local_servers: tuple[Receiver, Receiver]) -> None:
    v4, v6 = local_servers
    cases = [(host, v4) for host in LOOPBACK_V4] + [(host, v6) for host in LOOPBACK_V6]
    async with httpx.AsyncClient(trust_env=False, timeout=5) as plain:
        for host, server in cases:
            await plain.get(f"http://{host}:{server.port}/control")
        assert len(v4.hits) + len(v6.hits) == len(cases), "every form reaches a local server without the guard"
    before = len(v4.hits) + len(v6.hits)
    async with guarded_client(SsrfGuard(), 5) as client:
        for host, server in cases + [(host, v4) for host in EMBEDDED_LOOPBACK]:
            with pytest.raises(UnsafeURLError, match="refusing") as info:
                await send_following(client, "GET", f"http://{host}:{server.port}/guarded")
            assert "loopback" in str(info.value) or "unspecified" in str(info.value) or "private" in str(info.value)
    assert len(v4.hits) + len(v6.hits) == before, "the guard made no request"


async def test_embedded_forms_name_what_they_carry() -> None:
    guard = SsrfGuard()
    expected = {
        "[2002:7f00:1::]": "6to4 form of 127.0.0.1, a loopback address",
        "[64:ff9b::7f00:1]": "NAT64 form of 127.0.0.1",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]": "Teredo client form of 127.0.0.1",
        "[::ffff:0:7f00:1]": "IPv4-translated form of 127.0.0.1",
        "[64:ff9b:1::808:808]": "local-use NAT64",
    }
    for host, message in expected.items():
        with pytest.raises(UnsafeURLError, match=message):
            await guard.check(f"http://{host}/x")
    # A public IPv4 address behind a carrier form stays reachable (IPv6-only hosts use these).
    for host in ("[64:ff9b::808:808]", "[::ffff:8.8.8.8]", "[2002:808:808::]", "[2001:4860:4860::8888]"):
        assert (await guard.check(f"http://{host}/x")).port == 80


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
