"""POST /api/queues/{q}/jobs and jobs:bulk: validation, statuses, idempotent retries, all-or-nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from conveyor import JobState
from tests.api.conftest import Api
from tests.conftest import wait_for


async def test_enqueue_runs_the_job_and_reports_where_to_follow_it(api: Api) -> None:
    r = await api.http.post(
        f"/api/queues/{api.queue}/jobs",
        json={"name": "echo", "data": {"text": "hi", "n": 2}},
        headers=api.auth("enqueue"),
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["state"] == "waiting" and body["created"] is True and body["queue"] == api.queue
    assert body["status_url"] == f"/api/jobs/{api.queue}/{body['id']}"
    assert body["events_url"] == body["status_url"] + "/events"
    assert r.headers["location"] == body["status_url"]
    await api.start_worker()

    async def done() -> bool:
        return (await api.job(body["id"]))["state"] == "completed"

    await wait_for(done, what="job completed")
    job = await api.job(body["id"], who="reader")
    assert job["result"] == {"text": "hihi"} and job["data"] == {"text": "hi", "n": 2}
    assert job["name"] == "echo" and job["attempts_made"] == 1 and job["worker"]
    assert job["created_ms"] <= job["started_ms"] <= job["finished_ms"]


async def test_payload_is_validated_with_field_errors(api: Api) -> None:
    r = await api.http.post(
        f"/api/queues/{api.queue}/jobs",
        json={"name": "echo", "data": {"n": "many"}},
        headers=api.auth("enqueue"),
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    locs = {tuple(d["loc"]) for d in err["details"]}
    assert ("text",) in locs and ("n",) in locs
    assert (await api.app.queue(api.queue).counts())[JobState.WAITING] == 0


async def test_unknown_queue_and_unknown_task_are_404(api: Api) -> None:
    r = await api.http.post(
        "/api/queues/nope-q/jobs", json={"name": "echo", "data": {"text": "x"}}, headers=api.auth("enqueue")
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.http.post(
        f"/api/queues/{api.queue}/jobs", json={"name": "nope", "data": None}, headers=api.auth("enqueue")
    )
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]


async def test_malformed_json_is_400(api: Api) -> None:
    r = await api.http.post(
        f"/api/queues/{api.queue}/jobs",
        content=b'{"name": "echo", "data": ',
        headers={**api.auth("enqueue"), "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"


async def test_body_shape_and_options_are_checked(api: Api) -> None:
    url, h = f"/api/queues/{api.queue}/jobs", api.auth("enqueue")
    for body in (
        [1, 2],
        {"name": 5},
        {"name": "echo", "data": {"text": "x"}, "extra": 1},
        {"name": "echo", "data": {"text": "x"}, "options": {"priority": 5000}},
        {"name": "echo", "data": {"text": "x"}, "options": {"colour": "red"}},
        {"name": "echo", "data": {"text": "x"}, "options": {"run_at": "2030-01-01T00:00:00"}},
        {"name": "echo", "data": {"text": "x"}, "options": []},
    ):
        r = await api.http.post(url, json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
    assert sum((await api.app.queue(api.queue).counts()).values()) == 0


async def test_body_over_the_limit_is_413_by_length_and_by_stream(api_factory: Callable[..., Any]) -> None:
    async with api_factory(api_max_body_bytes=2000) as api:
        url, h = f"/api/queues/{api.queue}/jobs", api.auth("enqueue")
        big = {"name": "anything", "data": "x" * 3000}
        r = await api.http.post(url, json=big, headers=h)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"name": "anything", "data": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}'

        r = await api.http.post(url, content=chunks(), headers={**h, "Content-Type": "application/json"})
        assert "content-length" not in r.request.headers
        assert r.status_code == 413
        r = await api.http.post(url, json={"name": "anything", "data": "small"}, headers=h)
        assert r.status_code == 202
        assert (await api.app.queue(api.queue).counts())[JobState.WAITING] == 1


async def test_delay_option_gives_a_delayed_job(api: Api) -> None:
    r = await api.http.post(
        f"/api/queues/{api.queue}/jobs",
        json={"name": "echo", "data": {"text": "x"}, "options": {"delay": 60, "priority": 3}},
        headers=api.auth("enqueue"),
    )
    assert r.status_code == 202 and r.json()["state"] == "delayed"
    job = await api.job(r.json()["id"])
    assert job["state"] == "delayed" and job["priority"] == 3


async def test_idempotency_key_makes_post_safe_to_repeat(api: Api) -> None:
    url = f"/api/queues/{api.queue}/jobs"
    h = {**api.auth("enqueue"), "Idempotency-Key": "order-42"}
    body = {"name": "echo", "data": {"text": "pay", "n": 1}}
    first = await api.http.post(url, json=body, headers=h)
    again = await api.http.post(url, json={"data": {"n": 1, "text": "pay"}, "name": "echo"}, headers=h)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False
    other = await api.http.post(url, json={"name": "echo", "data": {"text": "pay", "n": 2}}, headers=h)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    assert "order-42" not in other.text
    assert (await api.app.queue(api.queue).counts())[JobState.WAITING] == 1
    job = await api.job(first.json()["id"])
    assert job["idempotency_key"] == "order-42"


async def test_idempotency_header_must_be_a_valid_key(api: Api) -> None:
    r = await api.http.post(
        f"/api/queues/{api.queue}/jobs",
        json={"name": "echo", "data": {"text": "x"}},
        headers={**api.auth("enqueue"), "Idempotency-Key": "has space"},
    )
    assert r.status_code == 422


async def test_bulk_enqueues_all_and_repeats_idempotently(api: Api) -> None:
    url = f"/api/queues/{api.queue}/jobs:bulk"
    jobs = [{"name": "echo", "data": {"text": str(i)}} for i in range(5)]
    h = {**api.auth("enqueue"), "Idempotency-Key": "batch-7"}
    r = await api.http.post(url, json={"jobs": jobs}, headers=h)
    assert r.status_code == 202, r.text
    ids = [j["id"] for j in r.json()["jobs"]]
    assert len(set(ids)) == 5
    again = await api.http.post(url, json={"jobs": jobs}, headers=h)
    assert again.status_code == 200 and [j["id"] for j in again.json()["jobs"]] == ids
    assert (await api.app.queue(api.queue).counts())[JobState.WAITING] == 5


async def test_bulk_is_all_or_nothing(api: Api) -> None:
    url, h = f"/api/queues/{api.queue}/jobs:bulk", api.auth("enqueue")
    good = {"name": "echo", "data": {"text": "ok"}}
    r = await api.http.post(
        url,
        json={
            "jobs": [
                good,
                {"name": "echo", "data": {}},
                good,
                {"name": "echo", "data": {"text": 1}, "options": {"attempts": 0}},
            ]
        },
        headers=h,
    )
    assert r.status_code == 422
    assert [d["index"] for d in r.json()["error"]["details"]] == [1, 3]
    assert "2 of 4 jobs rejected (2 invalid)" in r.json()["error"]["message"]
    r = await api.http.post(url, json={"jobs": [good, {"name": "missing"}]}, headers=h)
    assert r.status_code == 404 and r.json()["error"]["details"][0]["index"] == 1
    # Mixed: an unknown task makes it a 404; the message counts both kinds.
    r = await api.http.post(url, json={"jobs": [{"name": "missing"}, {"name": "echo", "data": {}}]}, headers=h)
    assert r.status_code == 404, r.text
    assert "2 of 2 jobs rejected (1 naming an unknown task, 1 invalid)" in r.json()["error"]["message"]
    assert [d["index"] for d in r.json()["error"]["details"]] == [0, 1]
    r = await api.http.post(url, json={"jobs": [good] * 1001}, headers=h)
    assert r.status_code == 422
    r = await api.http.post(url, json={"jobs": []}, headers=h)
    assert r.status_code == 422
    assert sum((await api.app.queue(api.queue).counts()).values()) == 0
    r = await api.http.post(url, json={"jobs": [good] * 1000}, headers=h)
    assert r.status_code == 202 and len(r.json()["jobs"]) == 1000
    assert (await api.app.queue(api.queue).counts())[JobState.WAITING] == 1000


async def test_backoff_cannot_name_a_function_over_http(api: Api) -> None:
    url, h = f"/api/queues/{api.queue}/jobs", api.auth("enqueue")
    bad = {
        "name": "echo",
        "data": {"text": "x"},
        "options": {"backoff": {"type": "callable", "ref": "os:_exit"}},
    }
    r = await api.http.post(url, json=bad, headers=h)
    assert r.status_code == 422 and "backoff" in r.json()["error"]["message"]
    ok = {
        "name": "echo",
        "data": {"text": "x"},
        "options": {"attempts": 3, "backoff": {"type": "exponential"}},
    }
    assert (await api.http.post(url, json=ok, headers=h)).status_code == 202


async def test_data_over_the_queue_payload_limit_is_413(api: Api) -> None:
    r = await api.http.post(
        f"/api/queues/{api.queue}/jobs",
        json={"name": "anything", "data": "z" * 600_000},  # under the body limit, over the 512 KiB data limit
        headers=api.auth("enqueue"),
    )
    assert r.status_code == 413 and "over the limit" in r.json()["error"]["message"]
    assert sum((await api.app.queue(api.queue).counts()).values()) == 0


async def test_keyed_options_over_http(api: Api) -> None:
    url = f"/api/queues/{api.queue}/jobs"
    keyed = {"key": "doc-7", "key_mode": "debounce", "key_window": 30}
    body = {"name": "echo", "data": {"text": "x"}, "options": keyed}
    first = (await api.http.post(url, json=body, headers=api.auth("enqueue"))).json()
    second = (await api.http.post(url, json=body, headers=api.auth("enqueue"))).json()
    assert first["state"] == second["state"] == "delayed"
    assert (await api.job(first["id"]))["state"] == "cancelled"  # replaced by the second
    assert (await api.job(second["id"]))["options"]["key_mode"] == "debounce"
    for options in (
        {"key": "k", "key_mode": "sometimes", "key_window": 1},
        {"key": "k", "key_mode": "throttle"},
        {"key": "k", "key_mode": "throttle", "key_window": 86401},
        {"key": "k", "key_mode": "latest", "key_window": 1},
    ):
        r = await api.http.post(url, json={**body, "options": options}, headers=api.auth("enqueue"))
        assert r.status_code == 422, (options, r.text)
    r = await api.http.post(url, json=body, headers={**api.auth("enqueue"), "Idempotency-Key": "abc"})
    assert r.status_code == 422 and "idempotency_key" in r.text
