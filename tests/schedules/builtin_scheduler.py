"""A real scheduler process running one slow built-in schedule (for test_builtin_runs.py).

Settings from the environment: REDIS_URL, SCHED_PREFIX, SCHED_LEASE_S, BUILTIN_INTERVAL_S and
BUILTIN_HOLD_MS (how long each run lasts, by the Redis clock). A run counts itself in Redis: while it
runs its own id is in the set `<prefix>:test:active` (the highest size seen by a start is kept in
`:peak`), and it pushes this process's name to `:starts` (with the Redis time to `:started_at`) when
it begins and to `:ends` when it ends. The id leaves the set before the run ends, even when the run is
cancelled (a start whose reply was lost to the cancellation included), so a run that stopped is never
counted as running. Prints "started" once the scheduler runs; closes it when stdin closes or on
SIGTERM, then prints its lost-claims count, and exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from collections.abc import Awaitable

from conveyor.redis.clock import redis_now_ms
from conveyor.redis.connection import RedisClient, connect
from conveyor.schedules import Scheduler
from conveyor.schedules.model import ScheduleKind
from conveyor.schedules.scheduler import Builtin, builtin_schedule

BUILTIN_ID = "conveyor-slow"

_START = """
local t = redis.call('TIME')
redis.call('SADD', KEYS[1], ARGV[1])
local n = redis.call('SCARD', KEYS[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') < n then redis.call('SET', KEYS[2], n) end
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('RPUSH', KEYS[4], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return n
"""


async def _uncancelled(work: Awaitable[object]) -> None:
    """Wait for `work` to finish even if cancelled meanwhile (CancelledError raised after)."""
    task = asyncio.ensure_future(work)
    interrupted = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            interrupted = True
    task.result()
    if interrupted:
        raise asyncio.CancelledError


def slow_run(client: RedisClient, prefix: str, name: str, hold_ms: int) -> Builtin:
    key = f"{prefix}:test"
    runs = itertools.count()

    async def run(now_ms: int) -> None:
        run_id = f"{name}.{next(runs)}"
        try:
            await client.eval(_START, 4, f"{key}:active", f"{key}:peak", f"{key}:starts", f"{key}:started_at",
                              run_id, name)
            until = await redis_now_ms(client, f"{key}:started_at") + hold_ms
            while True:  # the clock of the node holding the test's keys
                if await redis_now_ms(client, f"{key}:started_at") >= until:
                    break
                await asyncio.sleep(0.02)
            await client.rpush(f"{key}:ends", name)
        finally:
            await _uncancelled(client.srem(f"{key}:active", run_id))

    interval_s = float(os.environ.get("BUILTIN_INTERVAL_S", "0.1"))
    return Builtin(builtin_schedule(BUILTIN_ID, "conveyor.slow", interval_s, ScheduleKind.MAINTENANCE), run)


async def main() -> None:
    client = connect(os.environ["REDIS_URL"])
    prefix = os.environ["SCHED_PREFIX"]
    builtin = slow_run(client, prefix, os.environ.get("SCHED_NAME", str(os.getpid())),
                       int(os.environ.get("BUILTIN_HOLD_MS", "0")))
    scheduler = Scheduler(client, prefix=prefix, lease_s=float(os.environ["SCHED_LEASE_S"]),
                          maintenance_interval_s=None, max_sleep_s=0.5, builtins=[builtin])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await scheduler.start()
    print("started", flush=True)
    stdin_closed = asyncio.ensure_future(asyncio.to_thread(sys.stdin.readline))  # until the test closes stdin
    await asyncio.wait({stdin_closed, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    await scheduler.close()
    print(f"lost_claims={scheduler.stats.lost_claims}", flush=True)
    await client.aclose()
    with contextlib.suppress(Exception):
        await stdin_closed


if __name__ == "__main__":
    asyncio.run(main())
