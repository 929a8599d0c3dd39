"""NaN and Infinity have no JSON form; orjson writes them as `null`, a silent change of the value.
Data holding one is refused at enqueue before anything is written; a result holding one fails the
attempt for good (the handler would return it again); a progress value holding one raises in the
handler and writes nothing. `None` and the string "null" still go through unchanged."""

from __future__ import annotations

import math
from typing import Any

import pytest

from conveyor import JobContext, JobFailedError, JobSpec, JobState, Queue, SerializationError
from conveyor.partitions import worker_for
from conveyor.redis.connection import connect_sync
from conveyor.sync import SyncQueue
from conveyor.testing import RedisServer
from tests.conftest import counts_of, running

pytestmark = pytest.mark.behaviour

BAD = [float("nan"), float("inf"), -math.inf]


@pytest.mark.parametrize("bad", BAD, ids=["nan", "inf", "-inf"])
async def test_data_with_a_non_finite_number_is_refused_and_nothing_is_written(queue: Queue, bad: float) -> None:
    with pytest.raises(SerializationError, match=r"\$\.scores\[1\].*no NaN or Infinity"):
        await queue.add("x", {"scores": [1.0, bad]})
    with pytest.raises(SerializationError):
        await queue.add_bulk([JobSpec("x", {"ok": 1}), JobSpec("x", (2, {"deep": [bad]}))])
    assert sum((await counts_of(queue)).values()) == 0
    job = await queue.add("x", {"none": None, "text": "null", "n": 1.5})
    assert (await job.record()).data == {"none": None, "text": "null", "n": 1.5}


def test_sync_enqueue_refuses_non_finite_data(redis_server: RedisServer, qname: str) -> None:
    client = connect_sync(redis_server.url)
    try:
        q = SyncQueue(qname, redis=client)
        with pytest.raises(SerializationError, match="no NaN or Infinity"):
            q.add("x", {"v": float("nan")})
        assert client.exists(f"cv:{{{qname}}}:ready") == 0
    finally:
        client.close()


async def test_a_result_with_nan_fails_the_job_without_a_retry(queue: Queue) -> None:
    async def returns_nan(ctx: JobContext, data: Any) -> Any:
        return {"mean": float("nan")}

    def returns_inf(ctx: JobContext, data: Any) -> Any:  # a sync handler, the same path
        return [math.inf]

    async with running(worker_for(queue, {"a": returns_nan, "s": returns_inf})):
        a = await queue.add("a", attempts=3)
        s = await queue.add("s", attempts=3)
        with pytest.raises(JobFailedError, match=r"nan at \$\.mean.*no NaN or Infinity"):
            await a.result(timeout=30)
        with pytest.raises(JobFailedError, match=r"inf at \$\[0\]"):
            await s.result(timeout=30)
    for job in (a, s):
        rec = await job.record()
        assert rec.state is JobState.FAILED and rec.attempts_made == 1 and rec.result is None
        assert rec.error is not None and rec.error["type"] == "SerializationError"


async def test_a_progress_value_with_infinity_raises_in_the_handler_and_writes_nothing(queue: Queue) -> None:
    refused: list[str] = []

    async def reports(ctx: JobContext, data: Any) -> str:
        await ctx.progress({"done": 1})
        try:
            await ctx.progress({"rate": math.inf})
        except SerializationError as exc:
            refused.append(str(exc))
        return "ok"

    def reports_sync(ctx: JobContext, data: Any) -> str:
        ctx.progress_sync(1)
        try:
            ctx.progress_sync(float("nan"))
        except SerializationError as exc:
            refused.append(str(exc))
        return "ok"

    async with running(worker_for(queue, {"r": reports, "s": reports_sync})):
        r = await queue.add("r")
        s = await queue.add("s")
        assert await r.result(timeout=30) == "ok" and await s.result(timeout=30) == "ok"
    assert len(refused) == 2 and all("no NaN or Infinity" in m for m in refused)
    assert (await r.record()).progress == {"done": 1} and (await s.record()).progress == 1
    progress = [e.fields.get("progress") for e in await queue.read_events("0-0") if e.type == "progress"]
    assert sorted(p for p in progress if p is not None) == ['1', '{"done":1}']
