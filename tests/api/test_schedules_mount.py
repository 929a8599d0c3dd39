"""The schedules room's router is served by the API under the API's keys and error bodies."""

from __future__ import annotations

import uuid

from conveyor import JobState
from conveyor.redis.clock import redis_now_ms
from tests.api.conftest import Api
from tests.conftest import wait_for


async def test_schedules_routes_use_api_keys(api: Api) -> None:
    sid = f"api-{uuid.uuid4().hex[:8]}"
    url = f"/api/schedules/{sid}"
    body = {"task": "echo", "queue": api.queue, "data": {"text": "tick"}, "interval_s": 3600}
    assert (await api.http.put(url, json=body)).status_code == 401
    assert (await api.http.put(url, json=body, headers=api.auth("read"))).status_code == 403
    try:
        r = await api.http.put(url, json=body, headers=api.auth())
        assert r.status_code == 201, r.text
        listed = await api.http.get("/api/schedules", headers=api.auth("read"))
        assert sid in [s["id"] for s in listed.json()["schedules"]]
        bad = await api.http.put(url, json={**body, "cron": "not a cron"}, headers=api.auth())
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    finally:
        r = await api.http.delete(url, headers=api.auth())
    assert r.status_code == 204
    missing = await api.http.get(url, headers=api.auth("read"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_run_now_sent_again_with_its_idempotency_key_is_the_same_run(api: Api) -> None:
    """A run-now whose reply was lost is sent again with the same Idempotency-Key: the same job, and
    no second run; another key is another run; the schedule's data edited in between is a 409."""
    sid = f"rn-{uuid.uuid4().hex[:8]}"
    url = f"/api/schedules/{sid}"
    body = {"task": "echo", "queue": api.queue, "data": {"text": "tick"}, "interval_s": 3600}
    assert (await api.http.put(url, json=body, headers=api.auth())).status_code == 201
    q = api.app.queue(api.queue)
    try:
        first = await api.http.post(f"{url}/run-now", headers={**api.auth(), "Idempotency-Key": "deploy-42"})
        assert first.status_code == 200, first.text
        job_id = first.json()["job_id"]
        assert job_id.startswith(f"sched:{sid}:run-")
        run_ms = int(job_id.rsplit("-", 1)[1])
        # The run's id is its time: let the Redis clock pass it, so a second run would get another id.
        async def clock_past_run() -> bool:
            return await redis_now_ms(api.app.client, q.keys.meta) > run_ms

        await wait_for(clock_past_run, what="the Redis clock past the first run")
        again = await api.http.post(f"{url}/run-now", headers={**api.auth(), "Idempotency-Key": "deploy-42"})
        assert again.status_code == 200 and again.json() == first.json()
        assert (await q.counts())[JobState.WAITING] == 1
        other = await api.http.post(f"{url}/run-now", headers={**api.auth(), "Idempotency-Key": "deploy-43"})
        assert other.status_code == 200 and other.json()["job_id"] != job_id
        assert (await q.counts())[JobState.WAITING] == 2
        changed = {**body, "data": {"text": "edited"}}
        assert (await api.http.put(url, json=changed, headers=api.auth())).status_code == 200
        clash = await api.http.post(f"{url}/run-now", headers={**api.auth(), "Idempotency-Key": "deploy-42"})
        assert clash.status_code == 409 and clash.json()["error"]["code"] == "idempotency_conflict"
        assert (await q.counts())[JobState.WAITING] == 2
    finally:
        assert (await api.http.delete(url, headers=api.auth())).status_code == 204


async def test_run_now_sent_again_after_retention_removed_its_job_adds_no_second_run(api: Api) -> None:
    """The first run's job completed and retention deleted its record (here `result_ttl` 0: at once),
    and with it the job's idempotency key. A resend with the same Idempotency-Key within the key's
    life still answers the first call's job_id and adds nothing; the schedule's task changed in
    between is still a 409. Before, the resend found no key and enqueued a second run."""
    sid = f"rr-{uuid.uuid4().hex[:8]}"
    url = f"/api/schedules/{sid}"
    body = {"task": "echo", "queue": api.queue, "data": {"text": "tick"}, "interval_s": 3600,
            "options": {"result_ttl": 0}}
    assert (await api.http.put(url, json=body, headers=api.auth())).status_code == 201
    q = api.app.queue(api.queue)
    key = {**api.auth(), "Idempotency-Key": "nightly-7"}
    try:
        first = await api.http.post(f"{url}/run-now", headers=key)
        assert first.status_code == 200, first.text
        job_id = first.json()["job_id"]
        await api.start_worker()

        async def removed() -> bool:
            return await q.get_job(job_id) is None

        await wait_for(removed, what="the run completed and its record deleted")
        run_ms = int(job_id.rsplit("-", 1)[1])

        async def clock_past_run() -> bool:  # a second run would get another id
            return await redis_now_ms(api.app.client, q.keys.meta) > run_ms

        await wait_for(clock_past_run, what="the Redis clock past the first run")
        assert api.worker is not None
        await api.worker.close(5.0)  # nothing may run a second job unseen
        api.worker = None
        again = await api.http.post(f"{url}/run-now", headers=key)
        assert again.status_code == 200 and again.json() == first.json(), again.text
        assert sum((await q.counts()).values()) == 0  # no second run was added
        other = await api.http.post(f"{url}/run-now", headers={**api.auth(), "Idempotency-Key": "nightly-8"})
        assert other.status_code == 200 and other.json()["job_id"] != job_id
        changed = {**body, "data": {"text": "edited"}}
        assert (await api.http.put(url, json=changed, headers=api.auth())).status_code == 200
        clash = await api.http.post(f"{url}/run-now", headers=key)
        assert clash.status_code == 409 and clash.json()["error"]["code"] == "idempotency_conflict", clash.text
    finally:
        await api.http.delete(url, headers=api.auth())


async def test_a_schedule_edited_into_an_unreadable_definition_is_listed_as_broken(api: Api) -> None:
    """A definition edited by hand (not JSON): the list still answers, naming it under `broken`; its
    own routes answer 500 spoiled_key naming it; a PUT repairs it. Before, the list was a bare 500."""
    from conveyor.schedules.keys import ScheduleKeys

    sid = f"broken-{uuid.uuid4().hex[:8]}"
    url = f"/api/schedules/{sid}"
    body = {"task": "echo", "queue": api.queue, "data": {"text": "tick"}, "interval_s": 3600}
    assert (await api.http.put(url, json=body, headers=api.auth())).status_code == 201
    try:
        await api.app.client.hset(ScheduleKeys(api.app.prefix).defs, sid, "{not json")
        listed = await api.http.get("/api/schedules", headers=api.auth("read"))
        assert listed.status_code == 200, listed.text
        assert sid not in [s["id"] for s in listed.json()["schedules"]]
        assert sid in [b["id"] for b in listed.json()["broken"]]
        one = await api.http.get(url, headers=api.auth("read"))
        assert one.status_code == 500 and one.json()["error"]["code"] == "spoiled_key" and sid in one.text
        r = await api.http.put(url, json=body, headers=api.auth())
        assert r.status_code == 200, r.text
        assert (await api.http.get(url, headers=api.auth("read"))).status_code == 200
    finally:
        await api.http.delete(url, headers=api.auth())
