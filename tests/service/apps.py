"""The app the service tests run in a subprocess (`conveyor worker tests.service.apps:app`).

Its prefix comes from CONVEYOR_PREFIX, so every test gets its own keys on a shared server. Handlers
record in Redis how many of them run at once per queue, so tests can check the concurrency caps.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from conveyor import Conveyor, JobContext


def probe_key(prefix: str, queue: str, what: str) -> str:
    return f"{prefix}:test:{queue}:{what}"


def build_app(prefix: str) -> Conveyor:
    """Two queues ("fast" declared at 5, "slow.io" at 2), each with a `track` task; "fast" is
    partitioned when TEST_FAST_PARTITIONS (and TEST_FAST_PREVIOUS) say so."""
    app = Conveyor(prefix=prefix, name="service-tests")
    parts, previous = os.environ.get("TEST_FAST_PARTITIONS"), os.environ.get("TEST_FAST_PREVIOUS")
    app.declare_queue("fast", concurrency=5, partitions=int(parts) if parts else None,
                      previous_partitions=int(previous) if previous else None)
    app.declare_queue("slow.io", concurrency=2)

    async def track(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        """Counts concurrent runs; sleeps `sleep` s, or `first_sleep` s on the job's first run only."""
        client = app.client
        now = await client.incr(probe_key(app.prefix, ctx.queue, "current"))
        await client.rpush(probe_key(app.prefix, ctx.queue, "seen"), now)
        try:
            runs = await client.incr(probe_key(app.prefix, ctx.queue, f"runs:{ctx.job_id}"))
            delay = payload.get("first_sleep", 0) if runs == 1 else 0
            await asyncio.sleep(delay or payload.get("sleep", 0))
            if payload.get("fail"):
                raise ValueError(payload.get("error", "asked to fail"))
            return {"concurrent": now, "runs": runs}
        finally:
            await client.decr(probe_key(app.prefix, ctx.queue, "current"))

    app.task(track, queue="fast", name="track")
    app.task(track, queue="slow.io", name="track")
    if os.environ.get("TEST_SCHEDULE") == "1":

        @app.every(seconds=0.3, queue="ticks", id="ticker")
        async def tick(ctx: JobContext) -> str:
            return ctx.job_id

    return app


app = build_app(os.environ.get("CONVEYOR_PREFIX", "cv"))
