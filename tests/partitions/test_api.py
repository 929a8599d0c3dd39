"""The HTTP API and the dashboard's endpoints over a partitioned queue, on a standalone server and on a
real 3-node Cluster: every read and action reaches every partition, not partition 0 alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from conveyor import Conveyor, JobContext, JobState
from conveyor.api import create_app
from conveyor.api.keys import KeyStore
from conveyor.dashboard import bulk as bulk_module
from conveyor.partitions import PartitionedQueue, route_partition
from conveyor.partitions import queue as partitioned_module
from conveyor.queue import Queue
from conveyor.redis.connection import connect
from conveyor.testing import RedisServer
from tests.api.conftest import api_settings
from tests.api.live import live_api
from tests.conftest import wait_for

PARTS = 3


def ids_in(partition: int, n: int, stem: str = "job") -> list[str]:
    """`n` job ids that route to `partition` (an explicit id places a job by the id's hash)."""
    found: list[str] = []
    i = 0
    while len(found) < n:
        candidate = f"{stem}-{i}"
        if route_partition(candidate, PARTS) == partition:
            found.append(candidate)
        i += 1
    return found


def partitioned_app(url: str, queue: str) -> Conveyor:
    app = Conveyor(url)
    app.declare_queue(queue, partitions=PARTS, concurrency=4)

    @app.task(queue=queue)
    async def echo(ctx: JobContext, payload: Any) -> Any:
        return payload

    @app.task(queue=queue)
    async def boom(ctx: JobContext) -> None:
        raise ValueError("boom goes the handler")

    return app


@dataclass
class Env:
    http: httpx.AsyncClient
    app: Conveyor
    queue: str
    headers: dict[str, str]
    asgi: Any

    @property
    def pq(self) -> PartitionedQueue:
        q = self.app.queue(self.queue)
        assert isinstance(q, PartitionedQueue)
        return q

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.http.get(path, params=params, headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()

    async def post(self, path: str, body: Any = None, status: int = 200) -> Any:
        r = await self.http.post(path, json=body, headers=self.headers)
        assert r.status_code == status, r.text
        return r.json()


@asynccontextmanager
async def api_on(url: str, app: Conveyor, queue: str) -> AsyncIterator[Env]:
    asgi = create_app(app, api_settings(url))
    store = KeyStore(app.client)
    token, info = await store.create(f"partitions-{uuid.uuid4().hex[:6]}", ["admin"])
    try:
        async with LifespanManager(asgi) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=120) as http:
                yield Env(http, app, queue, {"Authorization": f"Bearer {token}"}, asgi)
    finally:
        await store.revoke(info.id)


@pytest.fixture
async def env(backend_url: str, qname: str) -> AsyncIterator[Env]:
    app = partitioned_app(backend_url, qname)
    try:
        async with api_on(backend_url, app, qname) as value:
            yield value
    finally:
        await app.queue(qname).obliterate(force=True)
        await app.close()


async def test_counts_listing_and_actions_by_id_reach_every_partition(env: Env) -> None:
    q = env.queue
    placed = {p: ids_in(p, 3) for p in range(PARTS)}
    body = {"jobs": [{"name": "echo", "data": i, "options": {"job_id": i}} for ids in placed.values() for i in ids]}
    (later_id,) = ids_in(2, 1, "later")
    body["jobs"].append({"name": "echo", "data": "later", "options": {"job_id": later_id, "delay": 3600}})
    out = await env.post(f"/api/queues/{q}/jobs:bulk", body, status=202)
    assert [j["state"] for j in out["jobs"]] == ["waiting"] * 9 + ["delayed"]
    for p, ids in placed.items():  # the precondition: the jobs really sit in three partitions
        assert [await env.pq.locate(i) for i in ids] == [env.pq.parts[p]] * 3

    stats = await env.get(f"/api/queues/{q}")
    assert stats["counts"]["waiting"] == 9 and stats["counts"]["delayed"] == 1
    listed = await env.get(f"/api/queues/{q}/jobs", state="waiting", limit=100)
    assert sorted(j["id"] for j in listed["jobs"]) == sorted(i for ids in placed.values() for i in ids)
    delayed = (await env.get(f"/api/queues/{q}/jobs", state="delayed"))["jobs"]
    assert [j["id"] for j in delayed] == [later_id] and delayed[0]["due_ms"] is not None
    assert (await env.get(f"/api/jobs/{q}/{later_id}"))["due_ms"] == delayed[0]["due_ms"]
    for ids in placed.values():
        assert (await env.get(f"/api/jobs/{q}/{ids[0]}"))["state"] == "waiting"

    # Actions by id, each on a job outside partition 0.
    r = await env.http.delete(f"/api/jobs/{q}/{placed[1][0]}", headers=env.headers)
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    assert (await env.get(f"/api/jobs/{q}/{placed[1][0]}"))["state"] == "cancelled"
    await env.post(f"/api/jobs/{q}/{later_id}/promote")
    assert (await env.get(f"/api/jobs/{q}/{later_id}"))["state"] == "waiting"
    await env.post(f"/api/jobs/{q}/{placed[1][0]}/retry")
    assert (await env.get(f"/api/jobs/{q}/{placed[1][0]}"))["state"] == "waiting"
    r = await env.http.post(f"/api/dashboard/jobs/{q}/{placed[2][1]}/remove", headers=env.headers)
    assert r.status_code == 200, r.text
    assert (await env.http.get(f"/api/jobs/{q}/{placed[2][1]}", headers=env.headers)).status_code == 404
    counts = (await env.get(f"/api/queues/{q}"))["counts"]
    assert counts["waiting"] == 9 and counts["delayed"] == 0 and counts["cancelled"] == 0

    # Pause and resume hold for every partition.
    assert (await env.post(f"/api/queues/{q}/pause"))["paused"] is True
    assert all([await Queue.is_paused(p) for p in env.pq.serving])
    assert (await env.get(f"/api/queues/{q}"))["paused"] is True
    await env.post(f"/api/queues/{q}/resume")
    assert not any([await Queue.is_paused(p) for p in env.pq.serving])

    found = await env.get("/api/dashboard/find", id=placed[2][0])
    assert [j["id"] for j in found["jobs"]] == [placed[2][0]]


async def test_waits_events_failures_and_dashboard_reads_over_partitions(env: Env) -> None:
    q = env.queue
    await env.post(f"/api/queues/{q}/pause")
    (first,) = ids_in(1, 1, "first")
    (second,) = ids_in(2, 1, "second")
    (bad,) = ids_in(2, 1, "bad")
    for job_id in (first, second):
        await env.post(f"/api/queues/{q}/jobs", {"name": "echo", "data": job_id, "options": {"job_id": job_id}},
                       status=202)
    await env.post(f"/api/queues/{q}/jobs", {"name": "boom", "options": {"job_id": bad, "attempts": 1}},
                   status=202)
    wait = asyncio.ensure_future(env.http.get(f"/api/jobs/{q}/{first}/wait", params={"timeout": 90},
                                              headers=env.headers))
    worker = env.app.worker(q, lease_ms=3000, idle_block_s=1.0)
    events: list[str] = []
    try:
        # The job's SSE stream follows its own partition's events: opened while the queue is paused,
        # it shows the waiting job, then its events once the queue resumes.
        async with (
            live_api(env.app, api_settings(str(env.app.redis_url))) as live,
            asyncio.timeout(120),
            live.http.stream("GET", f"/api/jobs/{q}/{second}/events", headers=live.auth()) as stream,
        ):
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    events.append(line.removeprefix("event:").strip())
                    if events == ["state"]:
                        await worker.start()
                        await env.post(f"/api/queues/{q}/resume")
        assert events[0] == "state" and "active" in events and events[-1] == "completed", events
        waited = await asyncio.wait_for(wait, 120)
        assert waited.status_code == 200 and waited.json()["state"] == "completed", waited.text
        await wait_for(lambda: _state_is(env, bad, "failed"), timeout=60, what="the failing job failed")
        retried = await env.post(f"/api/queues/{q}/failed:retry-all")
        assert retried["retried"] == 1
        await wait_for(lambda: _state_is(env, bad, "failed"), timeout=60, what="failed again")
    finally:
        await worker.close(5)
    r = await env.http.delete(f"/api/queues/{q}/failed", headers=env.headers)
    assert r.status_code == 200 and r.json()["purged"] == 1, r.text

    stats = (await env.get("/api/dashboard/stats"))["queues"][q]
    assert sum(stats["completed"]) == 2  # jobs of partitions 1 and 2
    signal = await env.get(f"/api/autoscaling/queues/{q}")
    assert signal["duration_sample"] == 2 and signal["backlog"] == 0  # the finished jobs of partitions 1 and 2
    details = await env.get(f"/api/dashboard/jobs/{q}/{second}/details")
    assert [a["outcome"] for a in details["timeline"]] == ["completed"]
    limits = await env.pq.limits_state()
    assert limits["partitions"] == PARTS and limits["paused"] is False


async def _state_is(env: Env, job_id: str, state: str) -> bool:
    r = await env.http.get(f"/api/jobs/{env.queue}/{job_id}", headers=env.headers)
    return r.status_code == 200 and r.json()["state"] == state


async def test_live_events_cover_every_partition(env: Env) -> None:
    q = env.queue
    jobs = [await env.pq.parts[p].add("echo", p) for p in range(PARTS)]  # one job straight into each
    settings = api_settings(str(env.app.redis_url))
    async with live_api(env.app, settings) as live:
        seen: set[str] = set()
        async with asyncio.timeout(120), live.http.stream("GET", "/api/events", params={"queue": q},
                                                          headers=live.auth()) as stream:
            worker = env.app.worker(q, lease_ms=3000, idle_block_s=1.0)
            started = False
            try:
                async for line in stream.aiter_lines():
                    if line.startswith("event: ready") and not started:
                        await worker.start()
                        started = True
                    if line.startswith("data:") and '"completed"' in line:
                        seen.update(j.id for j in jobs if j.id in line)
                    if len(seen) == PARTS:
                        break
            finally:
                await worker.close(5)
    assert seen == {j.id for j in jobs}


async def test_an_app_that_does_not_declare_the_queue_reads_it_whole(backend_url: str, qname: str) -> None:
    producer = PartitionedQueue(qname, partitions=PARTS, redis=backend_url)
    reader_app = Conveyor(backend_url)  # declares nothing: finds the layout in Redis
    try:
        jobs = await producer.add_bulk([{"name": "t", "data": i} for i in range(6)])
        async with api_on(backend_url, reader_app, qname) as env:
            assert (await env.get(f"/api/queues/{qname}"))["counts"]["waiting"] == 6
            listed = await env.get(f"/api/queues/{qname}/jobs", state="waiting", limit=50)
            assert sorted(j["id"] for j in listed["jobs"]) == sorted(j.id for j in jobs)
            last = jobs[0]
            assert await producer.locate(last.id) is not producer.parts[0]
            r = await env.http.delete(f"/api/jobs/{qname}/{last.id}", headers=env.headers)
            assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
            assert await producer.get_state(last.id) is JobState.CANCELLED
    finally:
        await producer.obliterate(force=True)
        await producer.close()
        await reader_app.close()


def _ids_read(entries: list[dict[str, Any]], queue: str) -> list[tuple[str, int]]:
    """Each ZRANGE/ZREVRANGE of the queue's keys the server ran, with how many ids it asked for."""
    found = []
    for entry in entries:
        raw = entry["command"]
        words = (raw.decode() if isinstance(raw, bytes) else str(raw)).split()
        if words[0].upper() in ("ZRANGE", "ZREVRANGE") and queue in words[1]:
            found.append((words[1], int(words[3]) - int(words[2]) + 1))
    return found


async def test_a_deep_cursor_is_refused_before_any_partition_is_read(
    qname: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of a partitioned queue is merged from the first cursor + limit ids of every partition,
    so the cursor is capped (MAX_PARTITIONED_LIST_CURSOR, here 20): past it, 422 before any read; at
    it, at most cap + limit ids per partition. Counted from the server's own log of the commands it
    ran (SLOWLOG with a 0 µs threshold on a server of this test alone). Before, cursor=10**9 asked
    every partition for its first 10**9 + limit ids: all of them."""
    monkeypatch.setattr(partitioned_module, "MAX_PARTITIONED_LIST_CURSOR", 20)
    with RedisServer() as server:
        app = partitioned_app(server.url, qname)
        try:
            async with api_on(server.url, app, qname) as env:
                await env.post(f"/api/queues/{qname}/jobs:bulk", {"jobs": [
                    {"name": "echo", "data": i, "options": {"delay": 3600}} for i in range(60)]}, status=202)
                assert (await env.pq.counts())[JobState.DELAYED] == 60
                admin = connect(server.url)
                try:
                    await admin.config_set("slowlog-log-slower-than", 0)
                    await admin.config_set("slowlog-max-len", 100_000)

                    async def listed(cursor: int) -> tuple[httpx.Response, list[tuple[str, int]]]:
                        await admin.slowlog_reset()
                        r = await env.http.get(f"/api/queues/{qname}/jobs", headers=env.headers,
                                               params={"state": "delayed", "cursor": cursor, "limit": 10})
                        return r, _ids_read(await admin.slowlog_get(100_000), qname)

                    r, reads = await listed(10**9)
                    assert r.status_code == 422 and "cursor must be at most 20" in r.text, r.text
                    assert reads == []
                    r, reads = await listed(20)
                    assert r.status_code == 200 and len(r.json()["jobs"]) == 10, r.text
                    assert len(reads) == PARTS and all(n <= 20 + 10 for _, n in reads), reads
                finally:
                    await admin.config_set("slowlog-log-slower-than", 10_000)
                    await admin.aclose()
        finally:
            await app.close()


async def test_the_dashboard_search_stops_at_the_partitioned_cursor_cap_and_says_so(
    redis_url: str, qname: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over real HTTP, with the cap at 20 and 5 jobs looked at per list call: a search that would
    continue past the cap ends there with `cut_at` and a message, both for a walk through pages of
    matches and for one call that matches nothing. Before, the search asked for the page past the
    cap and the dashboard got the list's 422 instead of its results."""
    monkeypatch.setattr(partitioned_module, "MAX_PARTITIONED_LIST_CURSOR", 20)
    monkeypatch.setattr(bulk_module, "SEARCH_CHUNK", 5)
    app = partitioned_app(redis_url, qname)
    try:
        async with live_api(app, api_settings(redis_url)) as api:
            path = f"/api/dashboard/queues/{qname}/jobs"
            r = await api.http.post(f"/api/queues/{qname}/jobs:bulk", headers=api.auth(), json={"jobs": [
                {"name": "echo", "data": i, "options": {"delay": 3600 + i}} for i in range(40)]})
            assert r.status_code == 202, r.text
            seen: list[str] = []
            cursor: int | None = 0
            replies = 0
            while cursor is not None:
                replies += 1
                assert replies <= 10, "the walk did not end"
                r = await api.http.get(path, headers=api.auth(), params={
                    "state": "delayed", "name": "ECH", "cursor": cursor, "limit": 7})
                assert r.status_code == 200, r.text
                body = r.json()
                seen += [j["id"] for j in body["jobs"]]
                cursor = body["next_cursor"]
                assert cursor is None or "cut_at" not in body, body  # only a cut reply has them
            assert body["cut_at"] == 21 and "first 21 delayed jobs" in body["cut_message"], body
            assert len(seen) == 21 == len(set(seen))
            r = await api.http.get(path, headers=api.auth(), params={"state": "delayed", "name": "nothing"})
            assert r.status_code == 200, r.text
            assert r.json() == {"jobs": [], "next_cursor": None, "cut_at": 25,
                                "cut_message": bulk_module.cut_message(JobState.DELAYED, 25)}
            r = await api.http.get(path, headers=api.auth(), params={"state": "delayed", "name": "echo", "limit": 50})
            assert len(r.json()["jobs"]) == 25 and r.json()["cut_at"] == 25  # the whole list it can read
    finally:
        await app.queue(qname).obliterate(force=True)
        await app.close()
