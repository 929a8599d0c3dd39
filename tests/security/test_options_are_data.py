"""Job options are data, never code, wherever they enter Redis: HTTP enqueue, bulk from mappings,
`PUT /api/schedules`, schedule declarations; a worker resolves a backoff name only among the policies
its application registered, and never imports a name read from Redis. Read keys see no schedule
payloads. Against the real API (uvicorn over TCP) and real workers."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor import Conveyor, InvalidOptionError, JobContext, Named
from conveyor.backoff import parse_backoff
from conveyor.errors import ConfigurationError
from tests.api.conftest import api_settings
from tests.api.live import LiveApi, live_api
from tests.api.sample_app import build_app
from tests.conftest import running, wait_for

POISON = "tests.security.poison_backoff"
CALLABLE = {"type": "callable", "ref": f"{POISON}:delay"}


def slow_retry(attempt: int, error: BaseException | None) -> float:
    return 0.05 * attempt


@pytest.fixture
async def api(redis_url: str, qname: str) -> AsyncIterator[LiveApi]:
    app = build_app(redis_url, qname, prefix=f"od{uuid.uuid4().hex[:10]}")
    app.backoff_policy("slow-retry", slow_retry)
    async with live_api(app, api_settings(redis_url)) as live:
        yield live
    await app.queue(qname).obliterate(force=True)
    await app.close()


async def test_schedules_refuse_code_and_hide_payloads_from_read_keys(api: LiveApi, qname: str) -> None:
    body: dict[str, Any] = {"task": "echo", "queue": qname, "data": {"text": "card 4111"}, "cron": "0 3 * * *"}
    for backoff in (CALLABLE, {"type": "named", "name": "not-registered"}, {"type": "named", "name": ["x"]}):
        r = await api.http.put("/api/schedules/poison", json={**body, "options": {"backoff": backoff}},
                               headers=api.auth())
        assert r.status_code == 422, r.text
        assert (await api.http.get("/api/schedules/poison", headers=api.auth())).status_code == 404
    named = {"type": "named", "name": "slow-retry"}
    r = await api.http.put("/api/schedules/nightly", headers=api.auth(),
                           json={**body, "options": {"attempts": 3, "backoff": named}})
    assert r.status_code == 201, r.text
    assert r.json()["options"]["backoff"] == {"type": "named", "name": "slow-retry"}
    for who, visible in (("read", False), ("reader", True), ("admin", True)):
        one = (await api.http.get("/api/schedules/nightly", headers=api.auth(who))).json()
        listed = (await api.http.get("/api/schedules", headers=api.auth(who))).json()["schedules"]
        [entry] = [s for s in listed if s["id"] == "nightly"]
        for shown in (one, entry):
            assert shown["data_hidden"] is not visible, who
            assert shown["data"] == ({"text": "card 4111"} if visible else None), who
    assert (await api.http.delete("/api/schedules/nightly", headers=api.auth())).status_code == 204


async def test_http_enqueue_takes_only_registered_policy_names(api: LiveApi, qname: str) -> None:
    url = f"/api/queues/{qname}/jobs"
    for backoff in (CALLABLE, {"type": "named", "name": "not-registered"}, {"type": "named", "name": {}}):
        r = await api.http.post(url, json={"name": "echo", "data": {"text": "x"}, "options": {"backoff": backoff}},
                                headers=api.auth("enqueue"))
        assert r.status_code == 422, r.text
    r = await api.http.post(url, headers=api.auth("enqueue"), json={
        "name": "echo", "data": {"text": "x"}, "options": {"backoff": {"type": "named", "name": "slow-retry"}}})
    assert r.status_code == 202, r.text


async def test_a_worker_never_imports_a_backoff_named_in_redis(api: LiveApi, qname: str) -> None:
    """Any writer can put options in Redis (an older release, a script, a compromised client): the
    worker applies its default backoff and records why, and the named module is never imported."""
    queue = api.app.queue(qname)
    job = await queue.add("boom", attempts=3)
    poisoned = json.dumps({"attempts": 3, "backoff": CALLABLE})
    await queue.client.hset(queue.keys.job(job.id), "opts", poisoned)
    assert POISON not in sys.modules
    async with running(api.app.worker(qname, lease_ms=5000)):
        async def retried() -> bool:
            rec = await job.record()
            return rec.attempts_made >= 1 and bool(rec.error and rec.error.get("backoff_error"))
        await wait_for(retried, timeout=20, what="first attempt failed and was scheduled again")
    rec = await job.record()
    assert "data, never code" in rec.error["backoff_error"] and rec.state.value in ("delayed", "waiting", "active")
    assert POISON not in sys.modules, "the worker imported a module named by job data"


async def test_registered_policies_run_and_code_is_refused_in_python(redis_url: str, qname: str) -> None:
    app = Conveyor(redis_url, prefix=f"od{uuid.uuid4().hex[:10]}")
    linear = app.backoff_policy("linear", slow_retry)
    assert linear == Named("linear") and parse_backoff(linear.to_json()) == linear
    seen: list[int] = []

    @app.task(queue=qname, attempts=3, backoff=linear)
    async def twice(ctx: JobContext) -> int:
        seen.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("again")
        return ctx.attempt

    queue = app.queue(qname)
    try:
        job = await twice.enqueue()
        assert (await job.record()).options["backoff"] == {"type": "named", "name": "linear"}
        async with running(app.worker(qname, lease_ms=5000)):
            assert await job.result(timeout=20) == 3
        assert seen == [1, 2, 3] and "backoff_error" not in ((await job.record()).error or {})

        with pytest.raises(InvalidOptionError, match="data, never code"):
            await queue.add("twice", backoff=slow_retry)
        with pytest.raises(InvalidOptionError, match="data, never code"):
            await queue.add_bulk([{"name": "twice"}, {"name": "twice", "options": {"backoff": CALLABLE}}])
        with pytest.raises(InvalidOptionError, match="data, never code"):
            app.cron("0 3 * * *", queue=qname, name="nightly", backoff=slow_retry)(twice.fn)
        with pytest.raises(ConfigurationError, match="registered twice"):
            app.backoff_policy("linear", lambda attempt, error: 1.0)
        assert sum((await queue.counts()).values()) == 1 and "nightly" not in app.schedules
    finally:
        await queue.obliterate(force=True)
        await app.close()
