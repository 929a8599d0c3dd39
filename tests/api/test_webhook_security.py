"""Webhooks through the real API (uvicorn over TCP) and a real worker: an enqueue key cannot obtain a
signature made with a customer's secret on a request aimed anywhere but that customer's registered
URL, and job data cannot set hop-by-hop or framing headers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor import Conveyor, JobState
from conveyor.handlers import install
from conveyor.handlers.endpoints import WebhookEndpoint
from conveyor.settings import Settings
from tests.api.conftest import api_settings
from tests.api.live import LiveApi, live_api
from tests.conftest import running
from tests.handlers.conftest import SECRET
from tests.handlers.servers import Receiver, signed_by

JOBS = "/api/queues/webhooks/jobs"


@pytest.fixture
async def customer() -> AsyncIterator[Receiver]:
    server = await Receiver(SECRET).start()
    yield server
    await server.close()


@pytest.fixture
async def attacker() -> AsyncIterator[Receiver]:
    server = await Receiver(None).start()
    yield server
    await server.close()


@pytest.fixture
async def api(redis_url: str, customer: Receiver) -> AsyncIterator[LiveApi]:
    app = Conveyor(redis_url, prefix=f"wh{uuid.uuid4().hex[:10]}")
    endpoint = WebhookEndpoint.of("customer-a", f"{customer.url}/hooks", SECRET)
    install(app, webhooks=True, settings=Settings(webhook_allow_hosts="127.0.0.1"), webhook_endpoints=[endpoint])
    async with live_api(app, api_settings(redis_url)) as live:
        yield live
    await app.queue("webhooks").obliterate(force=True)
    await app.close()


async def _post(api: LiveApi, data: dict[str, Any]) -> Any:
    return await api.http.post(JOBS, json={"name": "webhooks.deliver", "data": data}, headers=api.auth("enqueue"))


async def test_an_enqueue_key_cannot_get_a_customer_signature_for_its_own_url(
    api: LiveApi, customer: Receiver, attacker: Receiver
) -> None:
    mine = f"{attacker.url}/collect"
    refused = [
        {"url": mine, "endpoint": "customer-a", "payload": {"evil": 1}},  # the customer's secret, my URL
        {"url": mine, "endpoint": f"{customer.url}/hooks", "payload": {"evil": 2}},  # a secret chosen by URL
        {"endpoint": f"{customer.url}/hooks", "payload": {"evil": 3}},
    ]
    for data in refused:
        r = await _post(api, data)
        assert r.status_code == 422, r.text
    queue = api.app.queue("webhooks")
    assert sum((await queue.counts()).values()) == 0, "nothing was enqueued"

    own = await _post(api, {"url": mine, "payload": {"evil": 4}})
    to_customer = await _post(api, {"endpoint": "customer-a", "payload": {"order": 5}})
    assert own.status_code == to_customer.status_code == 202
    async with running(api.app.worker("webhooks", lease_ms=5000)):
        for job_id in (own.json()["id"], to_customer.json()["id"]):
            record = await queue.job(job_id).wait(20)
            assert record.state is JobState.COMPLETED, record.error
    [got] = attacker.received
    assert got.path == "/collect" and not signed_by(SECRET, got.body, got.headers)
    assert "webhook-signature" not in {k.lower() for k in got.headers}, "a bare URL is sent unsigned"
    [delivered] = customer.received
    assert delivered.path == "/hooks" and delivered.verified and delivered.body == b'{"order":5}'


FORBIDDEN = [
    "Transfer-Encoding", "Content-Length", "Connection", "Host", "Upgrade", "TE", "Trailer", "Keep-Alive",
    "Proxy-Authorization", "Proxy-Connection", "Expect", "transfer-encoding", "Content-Type", "webhook-id",
    "Webhook-Signature", "Conveyor-Attempt", "Bad Name", "X-Split\r\nInjected",
]


async def test_hop_by_hop_and_framing_headers_never_come_from_job_data(api: LiveApi, customer: Receiver) -> None:
    for name in FORBIDDEN:
        r = await _post(api, {"endpoint": "customer-a", "payload": {}, "headers": {name: "chunked"}})
        assert r.status_code == 422, f"{name}: {r.text}"
    r = await _post(api, {"endpoint": "customer-a", "payload": {}, "headers": {"X-Trace": "a\r\nTransfer-Encoding: x"}})
    assert r.status_code == 422
    queue = api.app.queue("webhooks")
    assert sum((await queue.counts()).values()) == 0, "nothing was enqueued"

    # Written straight to Redis (no enqueue-time check): the worker refuses it before any request.
    framing = {"Transfer-Encoding": "chunked", "Content-Length": "1"}
    smuggled = await queue.add("webhooks.deliver", {"endpoint": "customer-a", "payload": {"a": 1}, "headers": framing})
    ok = await _post(api, {"endpoint": "customer-a", "payload": {"b": 2}, "headers": {"X-Customer-Trace": "t-1"}})
    assert ok.status_code == 202
    async with running(api.app.worker("webhooks", lease_ms=5000)):
        bad = await smuggled.wait(20)
        good = await queue.job(ok.json()["id"]).wait(20)
    assert bad.state is JobState.FAILED and "hop-by-hop" in str(bad.error) and bad.attempts_made == 1
    assert good.state is JobState.COMPLETED
    [got] = customer.received
    assert got.body == b'{"b":2}' and got.headers["X-Customer-Trace"] == "t-1"
    assert "Transfer-Encoding" not in got.headers and got.headers["Content-Length"] == str(len(got.body))
