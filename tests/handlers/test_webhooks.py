"""Webhook delivery to a real HTTP receiver that verifies the signature; retries, 429, fatal 4xx,
SSRF refusals and the endpoint group, through a real worker."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import pytest

from conveyor import Conveyor, Fixed, JobFailedError, RateLimited, Retry, Unrecoverable
from conveyor.handlers import install
from conveyor.handlers.signing import HEADER, sign, signature, verify
from conveyor.handlers.webhooks import WebhookRequest, WebhookSecrets, WebhookSender, webhook_group
from conveyor.settings import Settings
from tests.conftest import running
from tests.handlers.conftest import SECRET
from tests.handlers.servers import Receiver, self_signed


def settings(**extra: object) -> Settings:
    values: dict[str, object] = {
        "webhook_secrets": json.dumps({"*": SECRET}),
        "webhook_allow_hosts": "127.0.0.1",
        **extra,
    }
    return Settings(**values)  # type: ignore[arg-type]


def sender(**extra: object) -> WebhookSender:
    s = settings(**extra)
    from conveyor.handlers.ssrf import AllowList, SsrfGuard

    return WebhookSender(
        SsrfGuard(AllowList.parse(s.webhook_allow_hosts)),
        WebhookSecrets.parse(s.webhook_secrets),
        timeout_s=s.webhook_timeout_s,
    )


def test_sign_and_verify() -> None:
    body = b'{"a":1}'
    header = sign("k1", body, timestamp=1_700_000_000)
    assert header == f"t=1700000000,v1={signature('k1', 1_700_000_000, body)}"
    assert verify("k1", body, header, now=1_700_000_100)
    assert not verify("k1", body + b" ", header, now=1_700_000_100)
    assert not verify("k2", body, header, now=1_700_000_100)
    assert not verify("k1", body, header, now=1_700_000_000 + 301), "old signatures are replays"
    assert verify(["old", "k1"], body, header, now=1_700_000_000), "a rotating receiver accepts either secret"
    assert not verify("k1", body, "v1=abc", now=1_700_000_000)


async def test_delivery_through_a_worker_is_signed_grouped_and_recorded(app: Conveyor, receiver: Receiver) -> None:
    handlers = install(app, webhooks=True, settings=settings())
    assert handlers.webhooks is not None
    receiver.answer("/hook", (200, {}, b"x" * 3000))
    url = f"{receiver.url}/hook"
    job = await handlers.webhooks.send(url, {"order": 42, "total": "9.99"}, event="order.paid")
    rec = await job.record()
    assert rec.options["group"] == f"127.0.0.1:{receiver.port}" == webhook_group(url)
    assert rec.max_attempts == 5
    async with running(app.worker("webhooks", lease_ms=5000)):
        result = await job.result(timeout=30)
    assert result.status == 200 and result.latency_ms > 0
    assert result.response == "x" * 1024 and result.response_truncated
    [got] = receiver.received
    assert got.verified and json.loads(got.body) == {"order": 42, "total": "9.99"}
    assert got.headers["Conveyor-Event"] == "order.paid"
    assert got.headers["Conveyor-Delivery"] == f"webhooks:{job.id}"
    assert got.headers["Content-Type"] == "application/json"


async def test_5xx_is_retried_until_the_endpoint_recovers(app: Conveyor, receiver: Receiver) -> None:
    handlers = install(app, webhooks=True, settings=settings())
    assert handlers.webhooks is not None
    receiver.answer("/flaky", (503, {}, b"down"), (500, {}, b"oops"))
    job = await handlers.webhooks.send(f"{receiver.url}/flaky", {"n": 1}, backoff=Fixed(0.05))
    async with running(app.worker("webhooks", lease_ms=5000)):
        result = await job.result(timeout=30)
    assert result.status == 200
    assert [r.headers["Conveyor-Attempt"] for r in receiver.received] == ["1", "2", "3"]
    assert all(r.verified for r in receiver.received)
    assert len({r.headers[HEADER] for r in receiver.received}) >= 1


async def test_other_4xx_fails_at_once(app: Conveyor, receiver: Receiver) -> None:
    handlers = install(app, webhooks=True, settings=settings())
    assert handlers.webhooks is not None
    receiver.answer("/gone", (410, {}, b"no such hook"))
    job = await handlers.webhooks.send(f"{receiver.url}/gone", {"n": 1})
    async with running(app.worker("webhooks", lease_ms=5000)):
        with pytest.raises(JobFailedError, match="410"):
            await job.result(timeout=30)
    assert (await job.record()).attempts_made == 1


@pytest.mark.parametrize("status", [408, 500, 502])
async def test_retryable_statuses(receiver: Receiver, status: int) -> None:
    receiver.answer("/h", (status, {}, b""))
    with pytest.raises(Retry, match=str(status)):
        await sender().deliver(WebhookRequest(url=f"{receiver.url}/h", payload={}))


async def test_429_honours_retry_after(receiver: Receiver) -> None:
    receiver.answer("/h", (429, {"Retry-After": "12"}, b""))
    with pytest.raises(RateLimited) as info:
        await sender().deliver(WebhookRequest(url=f"{receiver.url}/h", payload={}))
    assert info.value.retry_after == 12
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    receiver.answer("/h", (429, {"Retry-After": http_date}, b""))
    with pytest.raises(RateLimited) as info:
        await sender().deliver(WebhookRequest(url=f"{receiver.url}/h", payload={}))
    assert 25 <= info.value.retry_after <= 31


async def test_timeouts_and_refused_connections_are_retried(receiver: Receiver) -> None:
    from conveyor.testing import free_port

    with pytest.raises(Retry, match="network error"):
        await sender().deliver(WebhookRequest(url=f"http://127.0.0.1:{free_port()}/h", payload={}))
    with pytest.raises(Retry, match=r"no answer within 0\.3s"):
        await sender(webhook_timeout_s=0.3).deliver(WebhookRequest(url=f"{receiver.url}/slow", payload={}))


async def test_private_targets_are_refused_without_a_request(receiver: Receiver) -> None:
    strict = sender(webhook_allow_hosts="")
    with pytest.raises(Unrecoverable, match="loopback"):
        await strict.deliver(WebhookRequest(url=f"{receiver.url}/hook", payload={}))
    receiver.answer("/jump", (307, {"Location": "http://10.0.0.5/admin"}, b""))
    with pytest.raises(Unrecoverable, match=r"10\.0\.0\.5"):
        await sender().deliver(WebhookRequest(url=f"{receiver.url}/jump", payload={}))
    assert [r.path for r in receiver.received] == ["/jump"]


async def test_redirect_keeps_the_signed_body(receiver: Receiver) -> None:
    receiver.answer("/old", (308, {"Location": "/new"}, b""))
    result = await sender().deliver(WebhookRequest(url=f"{receiver.url}/old", payload={"v": 2}))
    assert result.final_url == f"{receiver.url}/new" and result.redirects == [result.final_url]
    assert [r.path for r in receiver.received] == ["/old", "/new"]
    assert all(r.verified and json.loads(r.body) == {"v": 2} for r in receiver.received)


async def test_secrets_per_endpoint(receiver: Receiver) -> None:
    secrets = WebhookSecrets.parse(json.dumps({f"{receiver.url}": SECRET, "other.example": "x"}))
    assert secrets.lookup(f"{receiver.url}/any/path") == SECRET
    assert secrets.lookup("https://OTHER.example/hook") == "x"
    with pytest.raises(Unrecoverable, match="no webhook secret"):
        secrets.lookup("https://third.example/hook")
    with pytest.raises(Unrecoverable, match="no webhook secret configured for endpoint"):
        secrets.lookup("https://third.example/hook", endpoint="missing")


def test_bad_requests_are_rejected_before_enqueue() -> None:
    with pytest.raises(ValueError, match="set by Conveyor"):
        WebhookRequest(url="https://x.example", headers={"Conveyor-Signature": "forged"})
    with pytest.raises(ValueError, match="line break"):
        WebhookRequest(url="https://x.example", headers={"X-A": "a\r\nX-B: b"})


async def test_pinned_address_keeps_the_customer_host(receiver: Receiver) -> None:
    from conveyor.handlers.ssrf import AllowList, SsrfGuard

    async def resolve(host: str, port: int) -> list[str]:
        return {"hooks.customer.test": ["127.0.0.1"]}[host]

    pinned = WebhookSender(SsrfGuard(AllowList.parse("127.0.0.1"), resolve), WebhookSecrets({"*": SECRET}))
    await pinned.deliver(WebhookRequest(url=f"http://hooks.customer.test:{receiver.port}/hook", payload=[1]))
    [got] = receiver.received
    assert got.headers["Host"] == f"hooks.customer.test:{receiver.port}" and got.verified


async def test_https_to_a_pinned_address_verifies_the_certificate_of_the_name(tmp_path: Path) -> None:
    """TLS goes to the checked IP but SNI and certificate checks use the URL's host name."""
    from conveyor.handlers.ssrf import AllowList, SsrfGuard

    cert, key = self_signed(tmp_path, ("hooks.customer.test",))
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    secure = await Receiver(SECRET).start(tls=server_tls)
    try:

        async def resolve(host: str, port: int) -> list[str]:
            return ["127.0.0.1"]

        guard = SsrfGuard(AllowList.parse("127.0.0.1"), resolve, ssl.create_default_context(cafile=str(cert)))
        pinned = WebhookSender(guard, WebhookSecrets({"*": SECRET}))
        result = await pinned.deliver(
            WebhookRequest(url=f"https://hooks.customer.test:{secure.port}/hook", payload={"tls": True})
        )
        assert result.status == 200
        [got] = secure.received
        assert got.verified and got.headers["Host"] == f"hooks.customer.test:{secure.port}"
        with pytest.raises(Retry, match=r"(?i)certificate"):
            await pinned.deliver(WebhookRequest(url=f"https://impostor.test:{secure.port}/hook", payload={}))
        assert len(secure.received) == 1
    finally:
        await secure.close()
