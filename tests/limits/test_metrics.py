"""Limits state reaches the worker service's Prometheus metrics."""

from __future__ import annotations

from conveyor import Queue
from conveyor.errors import RateLimited
from conveyor.limits import RateLimit
from conveyor.service.metrics import Metrics
from tests.conftest import running, wait_for


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{want}}} not in metrics")


async def test_limits_state_is_exported_as_gauges(queue: Queue) -> None:
    from conveyor import Worker

    await queue.set_limits(rate=RateLimit(10, per_s=60, burst=4), concurrency=3)

    async def throttled(ctx, data):  # type: ignore[no-untyped-def]
        raise RateLimited(retry_after=30)

    async with running(Worker(queue, {"t": throttled})):
        await queue.add("t")
        await wait_for(lambda: _blocked(queue), what="upstream backpressure recorded")
    metrics = Metrics({queue.name: ["t"]})
    metrics.set_limits(queue.name, await queue.limits_state(max_groups=1))
    text = metrics.render().decode()
    # burst + 1 = 5 tokens, one start spent; refilling at 10/min adds a little meanwhile
    assert 4.0 <= sample(text, "conveyor_limit_tokens", queue=queue.name, limit="rate") < 4.5
    assert 25 < sample(text, "conveyor_limit_blocked_seconds", queue=queue.name) <= 30
    assert sample(text, "conveyor_limit_active", queue=queue.name) == 0
    assert sample(text, "conveyor_group_backlog", queue=queue.name, kind="waiting_jobs") == 0


async def _blocked(queue: Queue) -> bool:
    return (await queue.limits_state())["blocked_until_ms"] is not None
