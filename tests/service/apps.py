"""The app the service tests run in a subprocess (`conveyor worker tests.service.apps:app`).

Its prefix comes from CONVEYOR_PREFIX, so every test gets its own keys on a shared server. Handlers
record in Redis how many of them run at once per queue, so tests can check the concurrency caps.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from conveyor import Conveyor, JobContext

app = Conveyor(prefix=os.environ.get("CONVEYOR_PREFIX", "cv"), name="service-tests")
app.declare_queue("fast", concurrency=5)  # the tests override this with CONVEYOR_CONCURRENCY_FAST
app.declare_queue("slow.io", concurrency=2)


def probe_key(prefix: str, queue: str, what: str) -> str:
    return f"{prefix}:test:{queue}:{what}"


async def _track(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Counts concurrent runs; sleeps `sleep` s, or `first_sleep` s on the job's first run only."""
    client = app.client
    now = await client.incr(probe_key(app.prefix, ctx.queue, "current"))
    await client.rpush(probe_key(app.prefix, ctx.queue, "seen"), now)
    try:
        runs = await client.incr(probe_key(app.prefix, ctx.queue, f"runs:{ctx.job_id}"))
        delay = payload.get("first_sleep", 0) if runs == 1 else 0
        await asyncio.sleep(delay or payload.get("sleep", 0))
        if payload.get("fail"):
            raise ValueError("asked to fail")
        return {"concurrent": now, "runs": runs}
    finally:
        await client.decr(probe_key(app.prefix, ctx.queue, "current"))


@app.task(queue="fast", name="track")
async def track_fast(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    return await _track(ctx, payload)


@app.task(queue="slow.io", name="track")
async def track_slow(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    return await _track(ctx, payload)
