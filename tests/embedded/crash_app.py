"""The app `conveyor up` serves in the end-to-end crash test: one queue with concurrency 2, where
`slow` hangs while CRASH_HANG=1 (the run that gets killed) and returns at once afterwards."""

from __future__ import annotations

import asyncio
import os

from conveyor import Conveyor, JobContext

app = Conveyor(name="crash-test")


async def slow(ctx: JobContext, data: dict[str, int]) -> int:
    if os.environ.get("CRASH_HANG") == "1":
        await asyncio.Event().wait()
    return data["n"]


async def quick(ctx: JobContext, data: dict[str, int]) -> int:
    return data["n"]


slow_task = app.task(slow, queue="crash", concurrency=2)
quick_task = app.task(quick, queue="crash")
