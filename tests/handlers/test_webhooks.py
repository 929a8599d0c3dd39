"""Webhook delivery to a real HTTP receiver that verifies Standard Webhooks signatures with the
`standardwebhooks` package; retries, 429, fatal 4xx, SSRF refusals, the endpoint registry and the
headers job data may not set, through a real worker."""

from __future__ import annotations

import json
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from conveyor import Conveyor, Fixed, JobFailedError, RateLimited, Retry, Unrecoverable
from conveyor.errors import ConfigurationError
from conveyor.handlers import install
from conveyor.handlers.endpoints import WebhookEndpoint, WebhookEndpoints
from conveyor.handlers.signing import message_id, new_secret, signature_headers, verify
from conveyor.handlers.ssrf import AllowList, SsrfGuard
from conveyor.handlers.webhooks import WebhookRequest, WebhookSender, endpoint_group, webhook_group
from conveyor.settings import Settings
from tests.conftest import running
from tests.handlers.conftest import SECRET
from tests.handlers.servers import Receiver, self_signed

ALLOW_LOOPBACK = Settings(webhook_allow_hosts="127.0.0.1")


def sender(
    receiver: Receiver, path: str = "/hook", *, timeout_s: float = 15.0, allow: str = "127.0.0.1"
) -> WebhookSender:
    endpoints = WebhookEndpoints([WebhookEndpoint.of("customer", f"{receiver.url}{path}", SECRET)])
    return WebhookSender(SsrfGuard(AllowList.parse(allow)), endpoints, timeout_s=timeout_s)


def to() -> WebhookRequest:
    return WebhookRequest(endpoint="customer", payload={})


def test_signatures_follow_standard_webhooks() -> None:
    body = b'{"a":1}'
    when = datetime.now(UTC)
    msg = message_id("webhooks:42")
    headers = signature_headers([SECRET], msg, body, when)
    assert headers["webhook-id"] == msg == message_id("webhooks:42") and "." not in msg
    assert headers["webhook-timestamp"] == str(int(when.timestamp()))
    assert Webhook(SECRET).verify(body, headers) == {"a": 1}
    assert verify(SECRET, body, headers) and not verify(SECRET, body + b" ", headers)
    assert not verify(new_secret(), body, headers)
    rotating = signature_headers([new_secret(), SECRET], msg, body)
    assert len(rotating["webhook-signature"].split(" ")) == 2 and verify(SECRET, body, rotating)
    assert set(signature_headers([], msg, body)) == {"webhook-id", "webhook-timestamp"}


async def test_delivery_through_a_worker_is_signed_grouped_and_recorded(app: Conveyor, receiver: Receiver) -> None:
    customer = WebhookEndpoint.of("customer", f"{receiver.url}/hook", SECRET)
    handlers = install(app, webhooks=True, settings=ALLOW_LOOPBACK, webhook_endpoints=[customer])
    assert handlers.webhooks is not None
    receiver.answer("/hook", (200, {}, b"x" * 3000))
    job = await handlers.webhooks.send({"order": 42, "total": "9.99"}, endpoint="customer", event="order.paid")
    rec = await job.record()
    assert rec.options["group"] == endpoint_group("customer") and rec.max_attempts == 5
    async with running(app.worker("webhooks", lease_ms=5000)):
        result = await job.result(timeout=30)
    assert result.status == 200 and result.latency_ms > 0 and result.signed
    assert result.url == customer.url and result.response == "x" * 1024 and result.response_truncated
    [got] = receiver.received
    assert got.verified and json.loads(got.body) == {"order": 42, "total": "9.99"}
    assert got.headers["webhook-id"] == message_id(f"webhooks:{job.id}")
    assert got.headers["Conveyor-Event"] == "order.paid"
    assert got.headers["Conveyor-Delivery"] == f"webhooks:{job.id}"
    assert got.headers["Content-Type"] == "application/json"


async def test_a_bare_url_is_delivered_unsigned(app: Conveyor) -> None:
    open_receiver = await Receiver(None).start()
    try:
        handlers = install(app, webhooks=True, settings=ALLOW_LOOPBACK)
        assert handlers.webhooks is not None
        job = await handlers.webhooks.send([1, 2], url=f"{open_receiver.url}/in")
        assert (await job.record()).options["group"] == webhook_group(open_receiver.url)
        async with running(app.worker("webhooks", lease_ms=5000)):
            result = await job.result(timeout=30)
        assert result.status == 200 and not result.signed
        [got] = open_receiver.received
        assert "webhook-signature" not in {k.lower() for k in got.headers}
        assert got.headers["webhook-id"].startswith("msg_") and got.headers["webhook-timestamp"].isdigit()
    finally:
        await open_receiver.close()


async def test_5xx_is_retried_until_the_endpoint_recovers(app: Conveyor, receiver: Receiver) -> None:
    customer = WebhookEndpoint.of("customer", f"{receiver.url}/flaky", SECRET)
    handlers = install(app, webhooks=True, settings=ALLOW_LOOPBACK, webhook_endpoints=[customer])
    assert handlers.webhooks is not None
    receiver.answer("/flaky", (503, {}, b"down"), (500, {}, b"oops"))
    job = await handlers.webhooks.send({"n": 1}, endpoint="customer", backoff=Fixed(0.05))
    async with running(app.worker("webhooks", lease_ms=5000)):
        result = await job.result(timeout=30)
    assert result.status == 200
    assert [r.headers["Conveyor-Attempt"] for r in receiver.received] == ["1", "2", "3"]
    assert all(r.verified for r in receiver.received)
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1, "one message id for every attempt"


async def test_other_4xx_fails_at_once(app: Conveyor, receiver: Receiver) -> None:
    customer = WebhookEndpoint.of("customer", f"{receiver.url}/gone", SECRET)
    handlers = install(app, webhooks=True, settings=ALLOW_LOOPBACK, webhook_endpoints=[customer])
    assert handlers.webhooks is not None
    receiver.answer("/gone", (410, {}, b"no such hook"))
    job = await handlers.webhooks.send({"n": 1}, endpoint="customer")
    async with running(app.worker("webhooks", lease_ms=5000)):
        with pytest.raises(JobFailedError, match="410"):
            await job.result(timeout=30)
    assert (await job.record()).attempts_made == 1


@pytest.mark.parametrize("status", [408, 500, 502])
async def test_retryable_statuses(receiver: Receiver, status: int) -> None:
    receiver.answer("/hook", (status, {}, b""))
    with pytest.raises(Retry, match=str(status)):
        await sender(receiver).deliver(to())


async def test_429_honours_retry_after(receiver: Receiver) -> None:
    receiver.answer("/hook", (429, {"Retry-After": "12"}, b""))
    with pytest.raises(RateLimited) as info:
        await sender(receiver).deliver(to())
    assert info.value.retry_after == 12
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    receiver.answer("/hook", (429, {"Retry-After": http_date}, b""))
    with pytest.raises(RateLimited) as info:
        await sender(receiver).deliver(to())
    assert 25 <= info.value.retry_after <= 31


@pytest.mark.parametrize("hint", ["0", "-5", "Thu, 01 Jan 1970 00:00:00 GMT", "retry-after-ms: 0"])
async def test_a_429_asking_for_no_wait_still_waits_a_second(receiver: Receiver, hint: str) -> None:
    """Before, `Retry-After: 0` (or negative, or a past date) put the job back with no wait and no
    attempt used: a receiver that always answered so was hammered by the same delivery in a loop. A
    negative number is no wait at all (not a Retry-After value): the 429 waits the default 5 s."""
    header = {"retry-after-ms": "0"} if hint.startswith("retry-after-ms") else {"Retry-After": hint}
    receiver.answer("/hook", (429, header, b"slow down"))
    with pytest.raises(RateLimited) as info:
        await sender(receiver).deliver(to())
    assert info.value.retry_after == (5.0 if hint == "-5" else 1.0)


async def test_timeouts_and_refused_connections_are_retried(receiver: Receiver) -> None:
    from conveyor.testing import free_port

    closed = WebhookSender(SsrfGuard(AllowList.parse("127.0.0.1")), WebhookEndpoints(), timeout_s=15)
    with pytest.raises(Retry, match="network error"):
        await closed.deliver(WebhookRequest(url=f"http://127.0.0.1:{free_port()}/h", payload={}))
    with pytest.raises(Retry, match=r"no answer within 0\.3s"):
        await sender(receiver, "/slow", timeout_s=0.3).deliver(to())


async def test_private_targets_are_refused_without_a_request(receiver: Receiver) -> None:
    with pytest.raises(Unrecoverable, match="loopback"):
        await sender(receiver, allow="").deliver(to())
    assert receiver.received == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_to_another_origin_is_not_followed(receiver: Receiver, status: int) -> None:
    """A 3xx is the endpoint's answer: the delivery fails at once with the status and where it
    pointed, and nothing reaches the other origin. Before, the signed body, its `webhook-id`,
    `webhook-timestamp` and `webhook-signature` went on to whatever origin the endpoint named (a
    valid signature of the customer's in a stranger's hands, replayable within its 5 minutes)."""
    elsewhere = await Receiver(None).start()
    try:
        receiver.answer("/hook", (status, {"Location": f"{elsewhere.url}/away"}, b""))
        req = WebhookRequest(endpoint="customer", payload={"v": 3}, headers={"X-Api-Key": "k3y"})
        with pytest.raises(Unrecoverable, match=rf"answered {status} \(a redirect to '{elsewhere.url}/away'\)"):
            await sender(receiver).deliver(req)
        assert elsewhere.received == []
        [got] = receiver.received
        assert got.path == "/hook" and got.verified
    finally:
        await elsewhere.close()


@pytest.mark.parametrize(
    "location", ["/new", "http://127.0.0.1/latest/meta-data", "http://169.254.169.254/latest/meta-data"]
)
async def test_no_redirect_is_followed_same_origin_or_internal(
    app: Conveyor, receiver: Receiver, location: str
) -> None:
    """Same origin or an internal address: the delivery is the one request to the endpoint's URL,
    and the job fails at once (one attempt) naming the redirect."""
    customer = WebhookEndpoint.of("customer", f"{receiver.url}/old", SECRET)
    handlers = install(app, webhooks=True, settings=ALLOW_LOOPBACK, webhook_endpoints=[customer])
    assert handlers.webhooks is not None
    receiver.answer("/old", (308, {"Location": location}, b""))
    job = await handlers.webhooks.send({"v": 2}, endpoint="customer")
    async with running(app.worker("webhooks", lease_ms=5000)):
        with pytest.raises(JobFailedError, match="308"):
            await job.result(timeout=30)
    rec = await job.record()
    assert rec.attempts_made == 1 and rec.error is not None and "not followed" in rec.error["message"]
    assert [r.path for r in receiver.received] == ["/old"]


async def test_an_unregistered_endpoint_fails_without_a_request(receiver: Receiver) -> None:
    with pytest.raises(Unrecoverable, match="no webhook endpoint named 'other'"):
        await sender(receiver).deliver(WebhookRequest(endpoint="other", payload={}))
    assert receiver.hits == []


def test_endpoint_registry_from_settings() -> None:
    raw = json.dumps(
        {
            "acme": {"url": "https://hooks.acme.example/in", "secret_env": "ACME_SECRET"},
            "globex": {"url": "https://globex.example/hooks", "secret": [SECRET, new_secret()]},
        }
    )
    registry = WebhookEndpoints.parse(raw, {"ACME_SECRET": SECRET})
    assert registry.get("acme").url == "https://hooks.acme.example/in"
    assert registry.get("acme").secrets == (SECRET,) and len(registry.get("globex").secrets) == 2
    assert SECRET not in repr(registry.get("acme")), "secrets never appear in reprs or logs"
    bad = {
        "not valid JSON": "{",
        "must be a JSON object": "[]",
        "are not set": json.dumps({"a": {"url": "https://a.example", "secret_env": "MISSING"}}),
        "exactly one of": json.dumps({"a": {"url": "https://a.example"}}),
        "must start with 'whsec_'": json.dumps({"a": {"url": "https://a.example", "secret": "plain"}}),
        "24 to 64 bytes": json.dumps({"a": {"url": "https://a.example", "secret": "whsec_c2hvcnQ="}}),
        "http\\(s\\) URL": json.dumps({"a": {"url": "ftp://a.example", "secret": SECRET}}),
        "endpoint name": json.dumps({"a b": {"url": "https://a.example", "secret": SECRET}}),
    }
    for message, value in bad.items():
        with pytest.raises(ConfigurationError, match=message):
            WebhookEndpoints.parse(value, {})
    with pytest.raises(ConfigurationError, match="declared twice"):
        registry.merged([WebhookEndpoint.of("acme", "https://elsewhere.example", SECRET)])


def test_requests_name_exactly_one_target() -> None:
    with pytest.raises(ValueError, match="exactly one of endpoint"):
        WebhookRequest(endpoint="customer", url="https://x.example")
    with pytest.raises(ValueError, match="exactly one of endpoint"):
        WebhookRequest(payload={})
    with pytest.raises(ValueError, match="pattern"):
        WebhookRequest(endpoint="https://customer.example/hooks")


async def test_pinned_address_keeps_the_customer_host(receiver: Receiver) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return {"hooks.customer.test": ["127.0.0.1"]}[host]

    url = f"http://hooks.customer.test:{receiver.port}/hook"
    endpoints = WebhookEndpoints([WebhookEndpoint.of("customer", url, SECRET)])
    pinned = WebhookSender(SsrfGuard(AllowList.parse("127.0.0.1"), resolve), endpoints)
    await pinned.deliver(WebhookRequest(endpoint="customer", payload=[1]))
    [got] = receiver.received
    assert got.headers["Host"] == f"hooks.customer.test:{receiver.port}" and got.verified


async def test_https_to_a_pinned_address_verifies_the_certificate_of_the_name(tmp_path: Path) -> None:
    """TLS goes to the checked IP but SNI and certificate checks use the URL's host name."""
    cert, key = self_signed(tmp_path, ("hooks.customer.test",))
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    secure = await Receiver(SECRET).start(tls=server_tls)
    try:

        async def resolve(host: str, port: int) -> list[str]:
            return ["127.0.0.1"]

        guard = SsrfGuard(AllowList.parse("127.0.0.1"), resolve, ssl.create_default_context(cafile=str(cert)))
        endpoints = WebhookEndpoints(
            [
                WebhookEndpoint.of("customer", f"https://hooks.customer.test:{secure.port}/hook", SECRET),
                WebhookEndpoint.of("impostor", f"https://impostor.test:{secure.port}/hook", SECRET),
            ]
        )
        pinned = WebhookSender(guard, endpoints)
        result = await pinned.deliver(WebhookRequest(endpoint="customer", payload={"tls": True}))
        assert result.status == 200
        [got] = secure.received
        assert got.verified and got.headers["Host"] == f"hooks.customer.test:{secure.port}"
        with pytest.raises(Retry, match=r"(?i)certificate"):
            await pinned.deliver(WebhookRequest(endpoint="impostor", payload={}))
        assert len(secure.received) == 1
    finally:
        await secure.close()


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://127.0.0.1:99999/hook", "port 99999 is not a TCP port"),
        ("http://127.0.0.1:0/hook", "port 0 is not a TCP port"),
        (f"http://{'a' * 64}.example/hook", "is not a valid host name"),
    ],
    ids=["port-over-65535", "port-0", "label-over-63"],
)
async def test_a_url_no_connection_can_reach_fails_at_once(
    receiver: Receiver, target: str, reason: str
) -> None:
    """Before, a port out of range escaped as an ExceptionGroup from the connection attempt and an
    overlong host label as a UnicodeError from the resolver's encoding: the job was retried."""
    direct = WebhookSender(SsrfGuard(AllowList.parse("127.0.0.1")), WebhookEndpoints(), timeout_s=15)
    with pytest.raises(Unrecoverable, match=reason):
        await direct.deliver(WebhookRequest(url=target, payload={}))
    assert receiver.received == []


@pytest.mark.parametrize(
    "value", ["é", "\u2028", "a\x01b", "a\x7fb", " lead", "trail ", "a\nb", "\0"],
    ids=["latin", "line-separator", "control", "delete", "leading-space", "trailing-space", "newline", "nul"],
)
def test_a_header_value_no_request_can_carry_is_refused_when_the_job_is_made(value: str) -> None:
    """Before, a non-ASCII value failed every attempt with an unclassified UnicodeEncodeError, a space
    at either end failed every attempt as a network error (retried 5 times), and a control character
    went out as sent."""
    with pytest.raises(ValueError, match="must be printable ASCII"):
        WebhookRequest(url="https://example.com/hook", headers={"X-Trace": value})


async def test_header_values_with_inner_spaces_and_tabs_arrive(receiver: Receiver) -> None:
    req = WebhookRequest(endpoint="customer", payload={}, headers={"X-Trace": "a b\tc", "X-Empty": ""})
    await sender(receiver).deliver(req)
    [got] = receiver.received
    assert got.headers["X-Trace"] == "a b\tc" and got.headers["X-Empty"] == ""
