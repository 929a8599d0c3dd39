"""The schedules router mounted in a bare FastAPI app, called over ASGI with httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from conveyor.redis.connection import RedisClient
from conveyor.schedules import MAINTENANCE_ID, Schedule, ScheduleKind, ScheduleStore
from conveyor.schedules.http import make_router

READ, READ_DATA, ADMIN = "read-token", "read-data-token", "admin-token"


def _auth(*allowed: str):  # type: ignore[no-untyped-def]
    def check(authorization: str = Header("")) -> None:
        if authorization.removeprefix("Bearer ") not in allowed:
            raise HTTPException(403, "forbidden")

    return check


def _shows_data(authorization: str = Header("")) -> bool:
    return authorization.removeprefix("Bearer ") in (READ_DATA, ADMIN)


@pytest.fixture
async def http(client: RedisClient, prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    store = ScheduleStore(client, prefix)
    app = FastAPI()
    app.include_router(make_router(lambda: store, _auth(READ, READ_DATA, ADMIN), _auth(ADMIN), _shows_data))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def hdr(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_put_get_list_delete(http: httpx.AsyncClient) -> None:
    body = {"task": "report", "queue": "reports", "data": {"kind": "daily"}, "cron": "0 3 * * *",
            "tz": "Europe/Madrid", "options": {"attempts": 3}, "missed": "all", "catch_up_cap": 5}
    r = await http.put("/api/schedules/nightly", json=body, headers=hdr(ADMIN))
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["id"] == "nightly" and out["cron"] == "0 3 * * *" and out["missed"] == "all"
    assert out["next_run"] is not None and out["version"] == 1 and out["source"] == "api"
    r = await http.put("/api/schedules/nightly", json={**body, "paused": True}, headers=hdr(ADMIN))
    assert r.status_code == 200 and r.json()["paused"] is True and r.json()["next_run"] is None
    r = await http.get("/api/schedules/nightly", headers=hdr(READ_DATA))
    assert r.status_code == 200 and r.json()["data"] == {"kind": "daily"} and not r.json()["data_hidden"]
    r = await http.get("/api/schedules/nightly", headers=hdr(READ))
    assert r.status_code == 200 and r.json()["data"] is None and r.json()["data_hidden"]
    r = await http.get("/api/schedules", headers=hdr(READ))
    assert [s["id"] for s in r.json()["schedules"]] == ["nightly"]
    r = await http.delete("/api/schedules/nightly", headers=hdr(ADMIN))
    assert r.status_code == 204
    assert (await http.get("/api/schedules/nightly", headers=hdr(READ))).status_code == 404
    assert (await http.delete("/api/schedules/nightly", headers=hdr(ADMIN))).status_code == 404


async def test_auth_dependencies_guard_the_routes(http: httpx.AsyncClient) -> None:
    body = {"task": "t", "interval_s": 60}
    assert (await http.get("/api/schedules")).status_code == 403
    assert (await http.put("/api/schedules/x", json=body, headers=hdr(READ))).status_code == 403
    assert (await http.delete("/api/schedules/x", headers=hdr(READ))).status_code == 403
    assert (await http.put("/api/schedules/x", json=body, headers=hdr(ADMIN))).status_code == 201


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"task": "t", "cron": "99 * * * *"}, "invalid cron"),
        ({"task": "t", "cron": "0 0 30 2 *"}, "matches no date"),
        ({"task": "t"}, "exactly one"),
        ({"task": "t", "interval_s": 60, "tz": "Nowhere/City"}, "time zone"),
        ({"task": "t", "interval_s": 60, "options": {"job_id": "x"}}, "cannot be set"),
        ({"task": "t", "interval_s": 60, "surprise": 1}, "surprise"),
        ({"task": "t", "interval_s": 60, "missed": "never"}, "missed"),
        ({"task": "t", "cron": "0 0 * * *", "start": "9999-12-31T00:00:00Z"}, "start"),
        ({"task": "t", "cron": "0 0 * * *", "end": "9999-12-31T23:59:59Z"}, "end"),
        ({"task": "t", "interval_s": 60, "start": "9999-12-31T23:59:59Z"}, "start"),
        ({"task": "t", "interval_s": 60, "start": "2026-01-01T00:00:00"}, "timezone-aware"),
        ({"task": "t", "interval_s": 60, "start": "0001-01-01T00:00:00+05:00"}, "start"),
        # Only what the document states: before, pydantic's lax mode read a number as a Unix time
        # and text as a number or a flag (`"paused": "false"` was a paused schedule, `"off"` too).
        ({"task": "t", "interval_s": 60, "start": 0}, "start"),
        ({"task": "t", "interval_s": 60, "end": "1700000000"}, "end"),
        ({"task": "t", "interval_s": "60"}, "interval_s"),
        ({"task": "t", "interval_s": 60, "paused": "true"}, "paused"),
        ({"task": "t", "interval_s": 60, "paused": 1}, "paused"),
        ({"task": "t", "interval_s": 60, "catch_up_cap": "5"}, "catch_up_cap"),
        ({"task": "t", "interval_s": 60, "catch_up_cap": 5.5}, "catch_up_cap"),
        ({"task": 5, "interval_s": 60}, "task"),
    ],
)
async def test_bad_bodies_get_422_and_write_nothing(
    http: httpx.AsyncClient, body: dict[str, object], fragment: str
) -> None:
    r = await http.put("/api/schedules/x", json=body, headers=hdr(ADMIN))
    assert r.status_code == 422 and fragment in r.text
    assert (await http.get("/api/schedules/x", headers=hdr(READ))).status_code == 404


async def test_bad_id_and_builtin_schedule(http: httpx.AsyncClient, client: RedisClient, prefix: str) -> None:
    r = await http.put("/api/schedules/bad%20id", json={"task": "t", "interval_s": 5}, headers=hdr(ADMIN))
    assert r.status_code == 422
    await ScheduleStore(client, prefix).put(Schedule(
        id=MAINTENANCE_ID, task="conveyor.maintenance", interval_s=300, kind=ScheduleKind.MAINTENANCE,
    ))
    body = {"task": "t", "interval_s": 5}
    r = await http.put(f"/api/schedules/{MAINTENANCE_ID}", json=body, headers=hdr(ADMIN))
    assert r.status_code == 409


async def test_pause_resume_and_run_now_actions(http: httpx.AsyncClient, client: RedisClient, prefix: str) -> None:
    body = {"task": "echo", "queue": f"q-{prefix}", "interval_s": 3600}
    assert (await http.put("/api/schedules/nightly", json=body, headers=hdr(ADMIN))).status_code == 201
    assert (await http.post("/api/schedules/nightly/pause", headers=hdr(READ))).status_code == 403
    r = await http.post("/api/schedules/nightly/pause", headers=hdr(ADMIN))
    assert r.status_code == 200 and r.json()["paused"] is True and r.json()["next_run"] is None
    r = await http.post("/api/schedules/nightly/resume", headers=hdr(ADMIN))
    assert r.json()["paused"] is False and r.json()["next_run"] is not None
    r = await http.post("/api/schedules/nightly/run-now", headers=hdr(ADMIN))
    job_id = r.json()["job_id"]
    assert r.status_code == 200 and job_id.startswith("sched:nightly:run-")
    from conveyor import Queue

    queue = Queue(f"q-{prefix}", redis=client, prefix=prefix)
    try:
        job = await queue.get_job(job_id)
        assert job is not None and job.name == "echo"
    finally:
        await queue.obliterate(force=True)
    assert (await http.post("/api/schedules/nope/run-now", headers=hdr(ADMIN))).status_code == 404
    assert (await http.post("/api/schedules/bad%20id/pause", headers=hdr(ADMIN))).status_code == 422


@pytest.mark.parametrize("builtin_id", [MAINTENANCE_ID, "conveyor-alerts"])
async def test_a_builtin_id_is_refused_before_any_scheduler_wrote_it(
    http: httpx.AsyncClient, client: RedisClient, prefix: str, builtin_id: str
) -> None:
    """A PUT under a built-in's id on a prefix no scheduler ran on yet: 409, nothing written. Taken,
    the next scheduler's start would replace the schedule with the built-in, and its jobs stop."""
    r = await http.put(f"/api/schedules/{builtin_id}", json={"task": "t", "interval_s": 5}, headers=hdr(ADMIN))
    assert r.status_code == 409 and "built-in" in r.json()["detail"]
    assert await ScheduleStore(client, prefix).find(builtin_id) is None
