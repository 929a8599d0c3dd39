"""`conveyor status|queues|jobs|job --json` print the HTTP API's own documents: same field names,
same values, for the same jobs (the CLI and the API share `conveyor.views`)."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor.api.schemas import JobOut, QueueOut, WorkerOut
from conveyor.service.registry import RegistryWriter
from tests.api.conftest import Api
from tests.cli.run import as_json

VOLATILE = {"now_ms"}  # the limits state stamps the time it was read


def steady(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: steady(v) for k, v in value.items() if k not in VOLATILE}
    return value


async def cli(*args: str, redis_url: str) -> Any:
    return await asyncio.to_thread(as_json, *args, redis_url=redis_url)


async def test_cli_json_matches_the_api(api: Api, redis_url: str) -> None:
    await api.start_worker()
    done = await api.enqueue("stepper", {"steps": 2})
    failed = await api.enqueue("boom")
    waiting = await api.enqueue("echo", {"text": "hi"}, delay=3600)
    for job_id in (done, failed):
        r = await api.http.get(f"/api/jobs/{api.queue}/{job_id}/wait?timeout=30", headers=api.auth())
        assert r.json()["state"] in ("completed", "failed")

    job = await cli("job", api.queue, done, redis_url=redis_url)
    assert set(job) == set(JobOut.model_fields) | {"logs"}
    assert job["logs"] == ["step 1", "step 2"]
    assert {k: v for k, v in job.items() if k != "logs"} == await api.job(done)

    for state, job_id in (("failed", failed), ("delayed", waiting)):
        page = await cli("jobs", api.queue, "--state", state, redis_url=redis_url)
        r = await api.http.get(f"/api/queues/{api.queue}/jobs?state={state}", headers=api.auth())
        assert page == r.json() and [j["id"] for j in page["jobs"]] == [job_id]
        assert set(page["jobs"][0]) == set(JobOut.model_fields)

    queues = await cli("queues", redis_url=redis_url)
    mine = next(q for q in queues["queues"] if q["name"] == api.queue)
    served = (await api.http.get(f"/api/queues/{api.queue}", headers=api.auth())).json()
    assert set(mine) == set(QueueOut.model_fields) | {"oldest_waiting_age_ms"}
    assert mine["oldest_waiting_age_ms"] is None  # only a delayed job is left; nothing waits
    # The CLI loads no app, so it cannot know the task names the API lists.
    assert mine["declared"] is None and served["declared"] is True
    assert steady({**mine, "tasks": served["tasks"], "declared": True}) == steady(
        {**served, "oldest_waiting_age_ms": None}
    )


async def test_status_lists_workers_as_the_api_does(api: Api, redis_url: str) -> None:
    record = {"id": f"w-{api.queue}", "host": "h1", "pid": 7, "queues": [api.queue], "concurrency": {api.queue: 4},
              "version": "0", "started_ms": 1, "counts": {api.queue: {"active": 1}}}
    writer = RegistryWriter(api.app.client, "cv", record["id"], lambda: record, interval_s=30)
    await writer.beat()
    try:
        status = await cli("status", redis_url=redis_url)
        served = (await api.http.get("/api/workers", headers=api.auth())).json()
        mine = [w for w in status["workers"] if w["id"] == record["id"]]
        assert mine == [w for w in served["workers"] if w["id"] == record["id"]]
        assert set(WorkerOut.model_fields) <= set(mine[0]) and "clock_offset_ms" in mine[0]
        names = [q["name"] for q in status["queues"]]
        assert api.queue in names  # a queue a live worker serves is listed even before any job
        queue = next(q for q in status["queues"] if q["name"] == api.queue)
        assert set(queue) == set(QueueOut.model_fields)
    finally:
        await writer.remove()
