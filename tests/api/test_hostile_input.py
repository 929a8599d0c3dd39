"""Hostile input against the API served over real HTTP: each is a specific 4xx and nothing is
written; the OpenAPI document states the same ranges validation enforces; 405 lists the methods
the path serves; error messages never echo a whole oversized input; an unhandled error is logged
once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor.backoff import BACKOFF_SECONDS_MAX, FACTOR_MAX
from conveyor.options import ATTEMPTS_MAX, COST_MAX, MAX_DURATION_S, MIN_DURATION_S, PRIORITY_MAX, PRIORITY_MIN
from tests.api.conftest import api_settings
from tests.api.live import LiveApi, live_api
from tests.api.sample_app import build_app


@pytest.fixture
async def api(redis_url: str, qname: str) -> AsyncIterator[LiveApi]:
    app = build_app(redis_url, qname)
    try:
        async with live_api(app, api_settings(redis_url)) as live:
            live.queue = qname  # type: ignore[attr-defined]
            yield live
    finally:
        await app.queue(qname).obliterate(force=True)
        await app.close()


async def _written(api: LiveApi) -> int:
    counts = (await api.http.get(f"/api/queues/{api.queue}", headers=api.auth())).json()["counts"]  # type: ignore[attr-defined]
    return sum(counts.values())


async def _post(api: LiveApi, body: Any, bulk: bool = False, raw: bytes | None = None) -> Any:
    path = f"/api/queues/{api.queue}/jobs" + (":bulk" if bulk else "")  # type: ignore[attr-defined]
    if raw is not None:
        headers = {**api.auth("enqueue"), "Content-Type": "application/json"}
        return await api.http.post(path, content=raw, headers=headers)
    return await api.http.post(path, json=body, headers=api.auth("enqueue"))


async def test_json_nested_300_deep_is_a_422(api: LiveApi) -> None:
    deep = b"[" * 300 + b"]" * 300
    r = await _post(api, None, raw=b'{"name": "anything", "data": %s}' % deep)
    assert r.status_code == 422 and "levels deep" in r.json()["error"]["message"], r.text
    r = await _post(api, None, raw=b'{"jobs": [{"name": "anything", "data": %s}]}' % deep, bulk=True)
    assert r.status_code == 422, r.text
    # 60 levels is fine: the limit is about abuse, not ordinary nesting.
    r = await _post(api, None, raw=b'{"name": "anything", "data": %s}' % (b"[" * 60 + b"]" * 60))
    assert r.status_code == 202, r.text
    assert await _written(api) == 1


@pytest.mark.parametrize(
    "options",
    [
        {"idempotency_key": "k", "idempotency_ttl": 1e300},
        {"idempotency_key": "k", "idempotency_ttl": 1e-9},
        {"result_ttl": 1e300},
        {"failed_ttl": 1e300},
        {"failed_ttl": 1e-9},
        {"timeout": 1e300},
        {"delay": 1e300},
        {"delay": -1},
        {"backoff": 1e300},
        {"backoff": {"type": "exponential", "factor": 1e300}},
        {"backoff": {"type": "fixed", "delay": 1e300}},
        {"attempts": 10**6},
        {"priority": 10**6},
        {"cost": 10**13},
    ],
)
async def test_out_of_range_options_are_a_422_and_write_nothing(api: LiveApi, options: dict[str, Any]) -> None:
    job = {"name": "echo", "data": {"text": "x"}, "options": options}
    r = await _post(api, job)
    assert r.status_code == 422, r.text
    ok = {"name": "echo", "data": {"text": "fine"}}
    r = await _post(api, {"jobs": [ok, job]}, bulk=True)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["index"] == 1
    assert await _written(api) == 0  # the valid first job of the bulk was not written either


async def test_bulk_is_all_or_nothing_when_a_later_job_conflicts(api: LiveApi) -> None:
    r = await _post(api, {"name": "echo", "data": {"text": "a"}, "options": {"job_id": "taken"}})
    assert r.status_code == 202
    jobs = [
        {"name": "echo", "data": {"text": "new"}, "options": {"job_id": "fresh"}},
        {"name": "echo", "data": {"text": "different body"}, "options": {"job_id": "taken"}},
    ]
    r = await _post(api, {"jobs": jobs}, bulk=True)
    assert r.status_code == 409, r.text
    assert await _written(api) == 1
    r = await api.http.get(f"/api/jobs/{api.queue}/fresh", headers=api.auth())  # type: ignore[attr-defined]
    assert r.status_code == 404


async def test_openapi_states_the_ranges_validation_enforces(api: LiveApi) -> None:
    spec = (await api.http.get("/openapi.json")).json()
    props = spec["components"]["schemas"]["JobOptionsIn"]["properties"]

    def bounds(name: str) -> tuple[float, float]:
        (number,) = [s for s in props[name].get("anyOf", [props[name]]) if "maximum" in s]
        return number["minimum"], number["maximum"]

    expected = {
        "idempotency_ttl": (MIN_DURATION_S, MAX_DURATION_S),
        "delay": (0, MAX_DURATION_S),
        "timeout": (MIN_DURATION_S, MAX_DURATION_S),
        "result_ttl": (MIN_DURATION_S, MAX_DURATION_S),  # or exactly 0
        "failed_ttl": (MIN_DURATION_S, MAX_DURATION_S),
        "priority": (PRIORITY_MIN, PRIORITY_MAX),
        "attempts": (1, ATTEMPTS_MAX),
        "cost": (0, COST_MAX),
        "backoff": (0, BACKOFF_SECONDS_MAX),
    }
    for name, (low, high) in expected.items():
        assert bounds(name) == (low, high), name
        extra = {"idempotency_key": "k"} if name == "idempotency_ttl" else {}
        # The documented edges are accepted by validation, one step past them refused.
        edge = {"name": "echo", "data": {"text": "x"}, "options": {**extra, name: high}}
        r = await _post(api, {"jobs": [edge]}, bulk=True)
        assert r.status_code == 202, (name, r.text)
        past = high + 1 if isinstance(high, int) else high * 2
        r = await _post(api, {"name": "echo", "data": {"text": "x"}, "options": {**extra, name: past}})
        assert r.status_code == 422, (name, r.text)
    exponential = spec["components"]["schemas"]["ExponentialBackoffIn"]["properties"]
    assert exponential["factor"]["maximum"] == FACTOR_MAX
    schedule = spec["components"]["schemas"]["ScheduleBody"]["properties"]["interval_s"]["anyOf"][0]
    assert "minimum" in schedule and "maximum" in schedule


async def test_405_carries_the_methods_the_path_serves(api: LiveApi) -> None:
    """Only methods the path serves, HEAD wherever GET is (tests/api/test_head.py): before, every GET
    path listed HEAD, which its route answered with this very 405."""
    r = await api.http.put(f"/api/queues/{api.queue}/jobs", headers=api.auth())  # type: ignore[attr-defined]
    assert r.status_code == 405
    assert set(r.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST"}
    r = await api.http.delete("/api/health")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    r = await api.http.patch(f"/api/jobs/{api.queue}/some/id", headers=api.auth())  # type: ignore[attr-defined]
    assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) == {"GET", "HEAD", "DELETE"}
    for path in ("/api/health", f"/api/queues/{api.queue}", "/docs", "/openapi.json"):  # type: ignore[attr-defined]
        assert (await api.http.head(path, headers=api.auth())).status_code == 200, path
    r = await api.http.delete("/openapi.json")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "options",
    [{"job_id": "x" * 10_000}, {"group": "x" * 10_000}, {"run_at": "x" * 10_000}, {"x" * 10_000: 1},
     {"backoff": "x" * 10_000}, {"idempotency_key": "é" * 10_000}],
)
async def test_error_messages_do_not_echo_oversized_input(api: LiveApi, options: dict[str, Any]) -> None:
    r = await _post(api, {"name": "echo", "data": {"text": "x"}, "options": options})
    assert r.status_code == 422
    assert len(r.content) < 2000, r.text
    r = await _post(api, {"name": "y" * 10_000})
    assert r.status_code == 404 and len(r.content) < 2000


async def test_an_unhandled_error_is_logged_once(
    redis_url: str, qname: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_app(redis_url, qname)
    try:
        async with live_api(app, api_settings(redis_url)) as api:

            @api.asgi.get("/api/test-boom")
            async def boom() -> None:
                raise RuntimeError("a bug")

            api.asgi.openapi_schema = None
            with caplog.at_level(logging.INFO):
                r = await api.http.get("/api/test-boom")
            assert r.status_code == 500
            assert r.json() == {"error": {"code": "internal_error", "message": "internal error"}}
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            logged = [rec for rec in caplog.records if rec.exc_info and rec.exc_info[0] is RuntimeError]
            assert len(logged) == 1, [rec.getMessage() for rec in logged]
    finally:
        await app.close()


async def test_a_one_value_query_parameter_given_twice_is_a_422(api: LiveApi) -> None:
    path = f"/api/queues/{api.queue}/jobs"  # type: ignore[attr-defined]
    r = await api.http.get(path, params=[("state", "waiting"), ("state", "failed")], headers=api.auth())
    assert r.status_code == 422 and "'state'" in r.json()["error"]["message"], r.text
    r = await api.http.get(path, params=[("state", "failed"), ("limit", "5")], headers=api.auth())
    assert r.status_code == 200 and r.json()["jobs"] == [], r.text


@pytest.mark.parametrize("path", ["/api/queues/{q}/jobs", "/api/queues/{q}/jobs:bulk"])
async def test_an_idempotency_key_sent_twice_is_a_422_and_writes_nothing(api: LiveApi, path: str) -> None:
    """Before, the first of two Idempotency-Key headers counted and the other was ignored: a retry
    that sent them in the other order (another proxy, another client library) enqueued again."""
    job = {"name": "echo", "data": {"text": "x"}}
    body = {"jobs": [job]} if path.endswith(":bulk") else job
    url = path.format(q=api.queue)  # type: ignore[attr-defined]
    for keys in (("k-1", "k-2"), ("k-2", "k-1"), ("k-1", "k-1")):
        headers = [*api.auth("enqueue").items(), *(("Idempotency-Key", k) for k in keys)]
        r = await api.http.post(url, json=body, headers=headers)
        assert r.status_code == 422, r.text
        assert "'idempotency-key'" in r.json()["error"]["message"], r.text
    assert await _written(api) == 0
    r = await api.http.post(url, json=body, headers={**api.auth("enqueue"), "Idempotency-Key": "k-1"})
    assert r.status_code == 202 and await _written(api) == 1


async def test_a_last_event_id_sent_twice_is_a_422(api: LiveApi) -> None:
    r = await api.http.post(f"/api/queues/{api.queue}/jobs", json={"name": "echo", "data": {"text": "x"}},  # type: ignore[attr-defined]
                            headers=api.auth("enqueue"))
    url = r.json()["events_url"]
    assert (await api.http.delete(r.json()["status_url"], headers=api.auth())).status_code == 200  # a stream ends
    headers = [*api.auth().items(), ("Last-Event-ID", "1-0"), ("Last-Event-ID", "2-0")]
    r = await api.http.get(url, headers=headers)
    assert r.status_code == 422 and "'last-event-id'" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"name": "echo", "name": "echo", "data": {"text": "x"}}', "name"),
        (b'{"name": "echo", "data": {"text": "a", "text": "b"}}', "text"),
        (b'{"name": "echo", "data": {"text": "x"}, "options": {"priority": 1, "priority": 9}}', "priority"),
        # Escapes hide the repeat from a byte-level look: "n\u0061me" is "name".
        (b'{"n\\u0061me": "echo", "name": "echo", "data": {"text": "x"}}', "name"),
        (b'{"name": "echo", "data": {"text": "x", "t\\u0065xt": {"deep": [1, 2, {"a:b": ":"}]}}}', "text"),
        (b'{"name": "echo", "data": {"text": "x", "a\\u003ab": 1, "a:b": 2}}', "a:b"),
    ],
)
async def test_a_repeated_json_key_is_a_422_naming_it_and_writes_nothing(api: LiveApi, raw: bytes, key: str) -> None:
    r = await _post(api, None, raw=raw)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"] == f"the body repeats the key {key!r} in one object (keys must be unique)"
    r = await _post(api, None, raw=b'{"jobs": [{"name": "echo", "data": {"text": "ok"}}, %s]}' % raw, bulk=True)
    assert r.status_code == 422 and repr(key) in r.json()["error"]["message"], r.text
    flow = b'{"name": "echo", "queue": "%s", "data": {"text": "p"}, "children": [%s]}' % (
        api.queue.encode(), raw.replace(b'"name": "echo"', b'"name": "echo", "queue": "%s"' % api.queue.encode(), 1))  # type: ignore[attr-defined]
    headers = {**api.auth("enqueue"), "Content-Type": "application/json"}
    r = await api.http.post("/api/flows", content=flow, headers=headers)
    assert r.status_code == 422 and repr(key) in r.json()["error"]["message"], r.text
    assert await _written(api) == 0


async def test_keys_that_only_look_alike_are_accepted(api: LiveApi) -> None:
    # Colons and escaped colons in keys and values, an escaped backslash before "u003a": no key repeats.
    raw = (b'{"name": "anything", "data": {"text": "a:b\\u003ac", "a\\u003ab": 1, "a:c": "::", '
           b'"\\\\u003a": 2, "\\u003a": [{"x": 1}, {"x": 2}], "big": 123456789012345678901234567890}}')
    r = await _post(api, None, raw=raw)
    assert r.status_code == 202, r.text
    data = (await api.http.get(f"/api/jobs/{api.queue}/{r.json()['id']}", headers=api.auth())).json()["data"]  # type: ignore[attr-defined]
    assert data["a:b"] == 1 and data[":"] == [{"x": 1}, {"x": 2}] and data["\\u003a"] == 2


async def test_a_repeated_key_in_a_body_fastapi_parses_is_a_422_too(api: LiveApi) -> None:
    headers = {**api.auth("admin"), "Content-Type": "application/json"}
    r = await api.http.put("/api/budgets/acme", content=b'{"hard": 5, "hard": 500}', headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"] == "the body repeats the key 'hard' in one object (keys must be unique)"
    assert (await api.http.get("/api/budgets/acme", headers=api.auth())).status_code == 404
    r = await api.http.put("/api/budgets/acme", content=b'{"hard": 500}', headers=headers)
    assert r.status_code == 200, r.text
    r = await api.http.put("/api/alerts", content=b'{"rules": [], "rules": []}', headers=headers)
    assert r.status_code == 422 and "'rules'" in r.text, r.text


async def test_a_body_of_100k_keys_with_one_repeat_is_a_422(api: LiveApi) -> None:
    # 100k distinct keys then a repeat of the first (1.3 MB, under the body limit).
    pairs = b",".join(b'"k%d":0' % i for i in range(100_000))
    raw = b'{"name": "anything", "data": {%s, "k0": 1}}' % pairs
    r = await _post(api, None, raw=raw)
    assert r.status_code == 422 and "'k0'" in r.text, r.text


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/api/alerts"), ("PATCH", "/api/costs/settings"), ("PUT", "/api/budgets/g"), ("PUT", "/api/schedules/s"),
    ("PUT", "/api/costs/prices/m"), ("POST", "/api/dashboard/queues/{q}/bulk"), ("POST", "/api/queues/{q}/jobs"),
])
async def test_a_body_that_is_not_json_is_a_400_on_every_route(api: LiveApi, method: str, path: str) -> None:
    """Before, routes whose body FastAPI parses answered malformed JSON with a 422 (the table says 400;
    routes parsing their own body already did)."""
    url = path.format(q=api.queue)  # type: ignore[attr-defined]
    for raw in (b"{", b'{"a": 1} trailing', b"\xff\xfe"):
        r = await api.http.request(method, url, content=raw, headers={**api.auth(), "Content-Type": "application/json"})
        assert r.status_code == 400, (raw, r.text)
        assert r.json() == {"error": {"code": "bad_request", "message": "the body is not valid JSON"}}
