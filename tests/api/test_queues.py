"""Queue statistics, pause/resume, paginated listings, retry-all and purge of failed jobs."""

from __future__ import annotations

from conveyor import JobState
from tests.api.conftest import Api
from tests.conftest import wait_for


async def test_queue_stats_count_states_and_throughput(api: Api) -> None:
    for i in range(3):
        await api.enqueue("echo", {"text": str(i)})
    await api.enqueue("boom")
    await api.enqueue("echo", {"text": "later"}, delay=3600)
    await api.start_worker()
    q = api.app.queue(api.queue)

    async def settled() -> bool:
        counts = await q.counts()
        return counts[JobState.COMPLETED] == 3 and counts[JobState.FAILED] == 1

    await wait_for(settled, what="jobs finished")
    r = await api.http.get(f"/api/queues/{api.queue}", headers=api.auth("read"))
    assert r.status_code == 200
    body = r.json()
    assert body["counts"] == {
        "waiting": 0,
        "delayed": 1,
        "active": 0,
        "completed": 3,
        "failed": 1,
        "cancelled": 0,
        "waiting-children": 0,
    }
    assert body["throughput"] == {"window_s": 60, "completed": 3, "failed": 1}
    assert body["paused"] is False
    assert set(body["tasks"]) >= {"echo", "boom", "stepper"}
    listed = (await api.http.get("/api/queues", headers=api.auth("read"))).json()["queues"]
    assert [x["name"] for x in listed] == [api.queue] and listed[0]["counts"]["completed"] == 3


async def test_pause_and_resume(api: Api) -> None:
    r = await api.http.post(f"/api/queues/{api.queue}/pause", headers=api.auth())
    assert r.status_code == 200 and r.json() == {"name": api.queue, "paused": True}
    assert (await api.http.get(f"/api/queues/{api.queue}", headers=api.auth("read"))).json()["paused"] is True
    job_id = await api.enqueue("echo", {"text": "x"})
    await api.start_worker()
    r = await api.http.get(f"/api/jobs/{api.queue}/{job_id}/wait?timeout=0.5", headers=api.auth("read"))
    assert r.json()["state"] == "waiting"  # paused: nobody takes it
    r = await api.http.post(f"/api/queues/{api.queue}/resume", headers=api.auth())
    assert r.status_code == 200 and r.json()["paused"] is False
    r = await api.http.get(f"/api/jobs/{api.queue}/{job_id}/wait?timeout=20", headers=api.auth("read"))
    assert r.json()["state"] == "completed"


async def test_listing_is_paginated_and_hides_data_without_read_data(api: Api) -> None:
    ids = [await api.enqueue("echo", {"text": str(i)}) for i in range(5)]
    url = f"/api/queues/{api.queue}/jobs"
    seen: list[str] = []
    cursor: int | None = 0
    pages = 0
    while cursor is not None:
        r = await api.http.get(
            url, params={"state": "waiting", "cursor": cursor, "limit": 2}, headers=api.auth("read")
        )
        assert r.status_code == 200
        page = r.json()
        seen += [j["id"] for j in page["jobs"]]
        assert all(j["data"] is None and j["data_hidden"] for j in page["jobs"])
        cursor = page["next_cursor"]
        pages += 1
    assert seen == ids and pages == 3
    r = await api.http.get(url, params={"state": "waiting", "limit": 1}, headers=api.auth("reader"))
    assert r.json()["jobs"][0]["data"] == {"text": "0", "n": 1}
    assert (await api.http.get(url, params={"state": "bogus"}, headers=api.auth("read"))).status_code == 422
    assert (await api.http.get(url, params={"limit": 0}, headers=api.auth("read"))).status_code == 422
    assert (await api.http.get("/api/queues/unknown-q/jobs", headers=api.auth("read"))).status_code == 404


async def test_retry_all_failed_and_purge(api: Api) -> None:
    for _ in range(5):
        await api.enqueue("boom")
    await api.start_worker()
    q = api.app.queue(api.queue)

    async def failed(n: int) -> bool:
        return (await q.counts())[JobState.FAILED] == n

    await wait_for(lambda: failed(5), what="5 failed")
    assert api.worker is not None
    await api.worker.close(1.0)
    api.worker = None
    r = await api.http.post(
        f"/api/queues/{api.queue}/failed:retry-all", params={"limit": 3}, headers=api.auth()
    )
    assert r.status_code == 200 and r.json() == {"queue": api.queue, "retried": 3, "remaining": 2}
    r = await api.http.post(f"/api/queues/{api.queue}/failed:retry-all", headers=api.auth())
    assert r.json()["retried"] == 2 and r.json()["remaining"] == 0
    assert (await q.counts())[JobState.WAITING] == 5
    await api.start_worker()
    await wait_for(lambda: failed(5), what="5 failed again")
    r = await api.http.delete(f"/api/queues/{api.queue}/failed", headers=api.auth())
    assert r.status_code == 200 and r.json() == {"queue": api.queue, "purged": 5}
    assert (await q.counts())[JobState.FAILED] == 0


async def test_queue_admin_on_unknown_queue_is_404(api: Api) -> None:
    for method, path in (
        ("POST", "pause"),
        ("POST", "resume"),
        ("POST", "failed:retry-all"),
        ("DELETE", "failed"),
    ):
        r = await api.http.request(method, f"/api/queues/ghost-q/{path}", headers=api.auth())
        assert r.status_code == 404, path
    assert (await api.http.get("/api/queues/ghost-q", headers=api.auth())).status_code == 404


async def test_queue_stats_show_limits_and_group_backlog(api: Api) -> None:
    from conveyor.limits import GroupLimits, RateLimit

    q = api.app.queue(api.queue)
    await q.set_limits(rate=RateLimit(100, per_s=60, burst=9), concurrency=4, group_defaults=GroupLimits(concurrency=1))
    for tenant in ("acme", "globex"):
        await api.enqueue("echo", {"text": tenant}, group=tenant)
    r = await api.http.get(f"/api/queues/{api.queue}", headers=api.auth("read"))
    limits = r.json()["limits"]
    assert limits["rate"]["limit"] == 100 and limits["rate"]["tokens"] == 10
    assert limits["concurrency"] == {"limit": 4, "active": 0}
    assert limits["waiting"]["grouped"] == 2
    assert sorted(g["group"] for g in limits["groups"]["list"]) == ["acme", "globex"]
