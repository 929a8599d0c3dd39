"""What an operator reads in a real worker process's log: failed attempts with their error message
(and the traceback once the job failed for good), never the payload or a secret; stats lines only
when a queue's figures changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor import JobState, Queue
from conveyor.redis.connection import RedisClient
from tests.conftest import wait_for
from tests.service.process import ServiceProcess

Start = Callable[..., ServiceProcess]
SECRET_PAYLOAD = "card-4111-1111"
ERROR = "upstream https://shop:hunter2@pay.example/charge refused"


async def uptime(svc: ServiceProcess) -> float:
    status, body = await svc.health()
    return float(body.get("uptime_s", 0.0)) if status else 0.0


async def run_for(svc: ServiceProcess, seconds: float) -> None:
    """Until the worker's own clock (its /health uptime) has advanced `seconds`: many stats ticks."""
    start = await uptime(svc)
    await wait_for(lambda: _past(svc, start + seconds), timeout=60, interval=0.1, what="worker uptime")


async def _past(svc: ServiceProcess, target: float) -> bool:
    return await uptime(svc) >= target


def job_lines(svc: ServiceProcess, job_id: str) -> list[dict[str, Any]]:
    return [e for e in svc.events("job finished") if e.get("job_id") == job_id]


async def test_failed_attempts_log_the_error_and_the_final_traceback_without_payload(
    services: Start, redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    svc = services(redis_url, prefix, CONVEYOR_LOG_LEVEL="info")
    await wait_for(svc.healthy, timeout=30, interval=0.1, what=f"service healthy:\n{svc.output()}")
    queue = Queue("fast", redis=plain_client, prefix=prefix)
    job = await queue.add("track", {"fail": True, "error": ERROR, "card": SECRET_PAYLOAD}, attempts=2, backoff=0.05)
    await wait_for(lambda: _state_is(queue, job.id, JobState.FAILED), timeout=30, what="job failed for good")
    await wait_for(lambda: len(job_lines(svc, job.id)) == 2, timeout=30, what=f"two lines:\n{svc.output()}")

    retry, final = job_lines(svc, job.id)
    masked = "upstream https://shop:***@pay.example/charge refused"
    assert (retry["level"], retry["outcome"], retry["error_type"]) == ("info", "retry", "ValueError")
    assert retry["error"] == masked and "traceback" not in retry
    assert (final["level"], final["outcome"], final["attempt"]) == ("warning", "failed", 2)
    assert final["error"] == masked
    assert final["traceback"].startswith("Traceback") and f"ValueError: {masked}" in final["traceback"]
    assert "raise ValueError" in final["traceback"]  # the handler's own frame
    output = "\n".join(svc.lines)
    assert SECRET_PAYLOAD not in output and "hunter2" not in output


async def _state_is(queue: Queue, job_id: str, state: JobState) -> bool:
    return await queue.get_state(job_id) is state


async def test_stats_lines_only_when_a_queue_changed(
    services: Start, redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    svc = services(redis_url, prefix, CONVEYOR_STATS_INTERVAL_S="0.1")
    await wait_for(svc.healthy, timeout=30, interval=0.1, what=f"service healthy:\n{svc.output()}")
    await run_for(svc, 2.0)  # twenty stats ticks with nothing happening
    assert svc.events("queue stats") == [], svc.output()

    job = await Queue("fast", redis=plain_client, prefix=prefix).add("track", {})
    await job.result(timeout=30)
    await wait_for(lambda: _stats_show(svc, processed=1), timeout=30, what=f"a stats line:\n{svc.output()}")
    await run_for(svc, 2.0)  # idle again: no new line
    lines = svc.events("queue stats")
    assert [line["queue"] for line in lines] == ["fast"] * len(lines)
    assert lines[-1]["processed"] == 1 and lines[-1]["succeeded"] == 1 and lines[-1]["active"] == 0
    settled = len(lines)
    await run_for(svc, 2.0)
    assert len(svc.events("queue stats")) == settled, svc.output()


def _stats_show(svc: ServiceProcess, **figures: int) -> bool:
    lines = svc.events("queue stats")
    return bool(lines) and all(lines[-1].get(k) == v for k, v in figures.items()) and lines[-1]["active"] == 0
