"""A real scheduler process that can crash at a chosen point of a pass (for test_crash.py).

Reads settings from the environment: REDIS_URL, SCHED_PREFIX, SCHED_LEASE_S, SCHED_GRACE_S and
SCHED_CRASH_AT: "" (never), "fire" (right after claiming a due schedule, before enqueueing) or
"advance" (after enqueueing the tick's job, before advancing the schedule); SCHED_CRASH_HOW: "kill"
(SIGKILL) or "stop" (SIGSTOP, a process frozen while holding its claim). It waits for a line on stdin
before starting, so the test controls when it competes for claims, prints "started" once running
and "crashing" right before it crashes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from conveyor.redis.connection import connect
from conveyor.schedules import Scheduler


def crash_before(scheduler: Scheduler, method: str, how: signal.Signals) -> None:
    original = getattr(scheduler, method)

    async def crashing(*args: Any) -> Any:
        print("crashing", flush=True)
        os.kill(os.getpid(), how)
        return await original(*args)

    setattr(scheduler, method, crashing)


async def main() -> None:
    client = connect(os.environ["REDIS_URL"])
    scheduler = Scheduler(
        client, prefix=os.environ["SCHED_PREFIX"], lease_s=float(os.environ["SCHED_LEASE_S"]),
        grace_s=float(os.environ["SCHED_GRACE_S"]), maintenance_interval_s=None, max_sleep_s=1.0,
    )
    crash_at = os.environ.get("SCHED_CRASH_AT", "")
    how = signal.SIGSTOP if os.environ.get("SCHED_CRASH_HOW") == "stop" else signal.SIGKILL
    if crash_at:
        crash_before(scheduler, {"fire": "_fire", "advance": "_advance"}[crash_at], how)
    await asyncio.to_thread(sys.stdin.readline)
    await scheduler.start()
    print("started", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # until the test closes stdin
    await scheduler.close()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
