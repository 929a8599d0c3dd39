"""API keys: 401/403 by scope, data hidden without read-data, revocation, shared rate limits (429),
CORS off unless configured, and error bodies that never echo secrets or stack traces."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI

from conveyor.api.keys import hash_secret
from tests.api.conftest import Api


async def test_missing_malformed_and_unknown_keys_are_401(api: Api) -> None:
    url = f"/api/queues/{api.queue}"
    r = await api.http.get(url)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert (await api.http.get(url, headers={"Authorization": "Bearer not-a-key"})).status_code == 401
    fake = "cvk_0123456789abcdef_" + "ab" * 32
    r = await api.http.get(url, headers={"Authorization": f"Bearer {fake}"})
    assert r.status_code == 401 and fake not in r.text and "ab" * 32 not in r.text
    assert (await api.http.get(url, headers={"Authorization": "Basic dXNlcjpwdw=="})).status_code == 401


async def test_wrong_secret_for_a_real_key_id_is_401(api: Api) -> None:
    token = api.tokens["admin"]
    forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
    r = await api.http.get(f"/api/queues/{api.queue}", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401


async def test_scopes_decide_what_a_key_may_do(api: Api) -> None:
    q = api.queue
    enqueue = {"name": "echo", "data": {"text": "x"}}
    r = await api.http.post(f"/api/queues/{q}/jobs", json=enqueue, headers=api.auth("read"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    job_id = await api.enqueue("echo", {"text": "x"})
    assert (await api.http.get(f"/api/jobs/{q}/{job_id}", headers=api.auth("enqueue"))).status_code == 403
    assert (await api.http.get("/api/workers", headers=api.auth("enqueue"))).status_code == 403
    for method, path in (
        ("DELETE", f"/api/jobs/{q}/{job_id}"),
        ("POST", f"/api/jobs/{q}/{job_id}/retry"),
        ("POST", f"/api/jobs/{q}/{job_id}/promote"),
        ("POST", f"/api/queues/{q}/pause"),
        ("POST", f"/api/queues/{q}/resume"),
        ("POST", f"/api/queues/{q}/failed:retry-all"),
        ("DELETE", f"/api/queues/{q}/failed"),
    ):
        for who in ("read", "reader", "client"):
            r = await api.http.request(method, path, headers=api.auth(who))
            assert r.status_code == 403, (method, path, who)
    # enqueue + read-data (implies read) is what a typical producer gets
    r = await api.http.post(f"/api/queues/{q}/jobs", json=enqueue, headers=api.auth("client"))
    assert r.status_code == 202
    assert (await api.job(r.json()["id"], who="client"))["data"] == {"text": "x", "n": 1}


async def test_data_is_hidden_without_read_data(api: Api) -> None:
    job_id = await api.enqueue("echo", {"text": "secret-payload"})
    plain = await api.job(job_id, who="read")
    assert plain["data"] is None and plain["data_hidden"] is True
    full = await api.job(job_id, who="reader")
    assert full["data"] == {"text": "secret-payload", "n": 1} and full["data_hidden"] is False
    assert (await api.job(job_id, who="admin"))["data_hidden"] is False


async def test_revoked_key_is_refused_at_once_without_the_key_cache(api_factory: Callable[..., Any]) -> None:
    async with api_factory(api_key_cache_s=0) as api:
        token, info = await api.keys.create("short-lived", ["read"])
        url = f"/api/queues/{api.queue}"
        assert (await api.http.get(url, headers={"Authorization": f"Bearer {token}"})).status_code == 200
        assert await api.keys.revoke(info.id)
        assert (await api.http.get(url, headers={"Authorization": f"Bearer {token}"})).status_code == 401
        assert not await api.keys.revoke(info.id)


async def _until_cache_time_passed(since: float, ttl_s: float) -> None:
    """Waits until `ttl_s` seconds have passed since `since` (time.monotonic()), the cache's bound."""
    await asyncio.sleep(max(0.0, since + ttl_s + 0.01 - time.monotonic()))


async def test_a_revoked_key_stops_working_in_every_api_process_within_the_cache_time(
    api_factory: Callable[..., Any],
) -> None:
    ttl = 1.0
    async with api_factory(api_key_cache_s=ttl) as one, api_factory(api_key_cache_s=ttl) as two:
        token, info = await one.keys.create("cached", ["enqueue", "read"])
        headers = {"Authorization": f"Bearer {token}"}
        for api in (one, two):  # both processes have checked (and cached) the key
            r = await api.http.post(f"/api/queues/{api.queue}/jobs", json={"name": "echo", "data": {"text": "a"}},
                                    headers=headers)
            assert r.status_code == 202, r.text
        revoked_at = time.monotonic()
        assert await one.keys.revoke(info.id)
        await _until_cache_time_passed(revoked_at, ttl)
        for api in (one, two):
            r = await api.http.post(f"/api/queues/{api.queue}/jobs", json={"name": "echo", "data": {"text": "b"}},
                                    headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert (await api.http.get(f"/api/queues/{api.queue}", headers=headers)).status_code == 401


async def test_a_cached_key_is_trusted_for_the_cache_time_only(api_factory: Callable[..., Any]) -> None:
    """With a long cache time a revoked key still works: the documented trade-off of the cache."""
    async with api_factory(api_key_cache_s=60) as api:
        token, info = await api.keys.create("cached-long", ["read"])
        headers = {"Authorization": f"Bearer {token}"}
        url = f"/api/queues/{api.queue}"
        assert (await api.http.get(url, headers=headers)).status_code == 200
        assert await api.keys.revoke(info.id)
        assert (await api.http.get(url, headers=headers)).status_code == 200
        # a wrong secret for the cached id is checked in Redis, never answered from the cache
        forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
        assert (await api.http.get(url, headers={"Authorization": f"Bearer {forged}"})).status_code == 401


async def test_changed_scopes_apply_within_the_cache_time(api_factory: Callable[..., Any]) -> None:
    ttl = 0.5
    async with api_factory(api_key_cache_s=ttl) as api:
        token, info = await api.keys.create("narrowed", ["enqueue", "read"])
        headers = {"Authorization": f"Bearer {token}"}
        url = f"/api/queues/{api.queue}"
        assert (await api.http.get(url, headers=headers)).status_code == 200
        changed_at = time.monotonic()
        await api.app.client.hset(api.keys.record_key(info.id), "scopes", "enqueue")
        await _until_cache_time_passed(changed_at, ttl)
        r = await api.http.get(url, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        await api.keys.revoke(info.id)


async def test_a_rate_limited_key_is_never_cached(api_factory: Callable[..., Any]) -> None:
    """Its check is its rate decision, made in Redis for every request: revocation applies at once."""
    async with api_factory(api_key_cache_s=60) as api:
        token, info = await api.keys.create("limited", ["read"], rate_limit=1000)
        headers = {"Authorization": f"Bearer {token}"}
        url = f"/api/queues/{api.queue}"
        assert (await api.http.get(url, headers=headers)).status_code == 200
        assert await api.keys.revoke(info.id)
        assert (await api.http.get(url, headers=headers)).status_code == 401


async def test_keys_are_stored_hashed(api: Api) -> None:
    token, info = await api.keys.create("hashed", ["read"])
    try:
        stored = await api.app.client.hgetall(api.keys.record_key(info.id))
        secret = token.rsplit("_", 1)[1]
        assert secret not in str(stored) and stored["hash"] == hash_secret(secret)
        assert stored["scopes"] == "read" and stored["name"] == "hashed"
    finally:
        await api.keys.revoke(info.id)


async def test_rate_limit_is_per_key_and_shared_by_api_processes(api_factory: Callable[..., Any]) -> None:
    async with api_factory(api_rate_limit=2) as one, api_factory(api_rate_limit=2) as two:
        token, info = await one.keys.create("limited", ["read"])
        try:
            headers = {"Authorization": f"Bearer {token}"}
            url = f"/api/queues/{one.queue}"
            assert [(await one.http.get(url, headers=headers)).status_code for _ in range(2)] == [200, 200]
            # the burst (one second's worth) is spent: another API process refuses the same key; five
            # calls in a row cannot all come 0.5 s apart, so at least one is refused even on a slow machine
            refused = None
            for _ in range(5):
                r = await two.http.get(f"/api/queues/{two.queue}", headers=headers)
                if r.status_code == 429:
                    refused = r
                    break
                assert r.status_code == 200
            assert refused is not None and refused.json()["error"]["code"] == "rate_limited"
            assert int(refused.headers["retry-after"]) == 1
            # other keys have their own budget
            r = await two.http.get(f"/api/queues/{two.queue}", headers=two.auth("read"))
            assert r.status_code == 200
        finally:
            await one.keys.revoke(info.id)


async def test_per_key_rate_limit_overrides_the_default(api: Api) -> None:
    token, info = await api.keys.create("tight", ["read"], rate_limit=1)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        codes = [(await api.http.get("/api/workers", headers=headers)).status_code for _ in range(3)]
        assert codes[0] == 200 and 429 in codes
    finally:
        await api.keys.revoke(info.id)


async def test_health_and_docs_are_open(api: Api) -> None:
    assert (await api.http.get("/api/health")).status_code == 200
    assert (await api.http.get("/openapi.json")).status_code == 200
    docs = await api.http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_cors_is_off_unless_configured(api_factory: Callable[..., Any]) -> None:
    origin = {"Origin": "https://app.example.com"}
    preflight = {
        **origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with api_factory() as api:
        r = await api.http.get("/api/health", headers=origin)
        assert "access-control-allow-origin" not in r.headers
        r = await api.http.options(f"/api/queues/{api.queue}/jobs", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    async with api_factory(api_cors_origins="https://app.example.com") as api:
        r = await api.http.options(f"/api/queues/{api.queue}/jobs", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.com"
        r = await api.http.get("/api/health", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in r.headers


async def test_unexpected_errors_are_a_bare_500(api: Api) -> None:
    asgi: FastAPI = api.asgi

    @asgi.get("/api/test-explode")
    async def explode() -> None:
        raise RuntimeError("password=hunter2 leaked in an exception")

    transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)  # the server would log it
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        r = await http.get("/api/test-explode")
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal_error", "message": "internal error"}}
    assert "hunter2" not in r.text and "Traceback" not in r.text


async def test_unknown_route_and_method_use_the_error_body(api: Api) -> None:
    r = await api.http.get("/api/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.http.put(f"/api/queues/{api.queue}/jobs", headers=api.auth())
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


async def test_cors_admits_every_method_the_api_serves(api_factory: Callable[..., Any]) -> None:
    """Before, the allowed methods left PATCH out: a browser page on an allowed origin could not
    change the cost settings (`PATCH /api/costs/settings`), its preflight was refused."""
    origin = "https://app.example.com"
    async with api_factory(api_cors_origins=origin) as api:
        q = api.queue
        for method, path in (("PATCH", "/api/costs/settings"), ("PUT", "/api/alerts"),
                             ("DELETE", f"/api/queues/{q}/failed"), ("POST", f"/api/queues/{q}/jobs")):
            preflight = {"Origin": origin, "Access-Control-Request-Method": method,
                         "Access-Control-Request-Headers": "authorization,content-type"}
            r = await api.http.options(path, headers=preflight)
            assert r.status_code == 200, (method, r.status_code, r.text)
            assert method in r.headers["access-control-allow-methods"], (method, r.headers)
        r = await api.http.patch("/api/costs/settings", json={"retention_days": 90},
                                 headers={**api.auth(), "Origin": origin})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin, r.text
