"""A real scheduler process running one slow built-in schedule (for test_builtin_runs.py).

Settings from the environment: REDIS_URL, SCHED_PREFIX, SCHED_LEASE_S, BUILTIN_INTERVAL_S and
BUILTIN_HOLD_MS (how long each run lasts, by the Redis clock). A run counts itself in Redis: it
increments `<prefix>:test:active` while it runs (recording the highest value in `:peak`), pushes
this process's name to `:starts` when it begins and to `:ends` when it ends. Prints "started" once
the scheduler runs; exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import os
import sys

from conveyor.redis.connection import RedisClient, connect
from conveyor.schedules import Scheduler
from conveyor.schedules.model import ScheduleKind
from conveyor.schedules.scheduler import Builtin, builtin_schedule
from conveyor.schedules.store import redis_clock

BUILTIN_ID = "conveyor-slow"


def slow_run(client: RedisClient, prefix: str, name: str, hold_ms: int) -> Builtin:
    key = f"{prefix}:test"

    async def run(now_ms: int) -> None:
        active = int(await client.incr(f"{key}:active"))
        try:
            await client.eval(
                "if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then "
                "redis.call('SET', KEYS[1], ARGV[1]) end", 1, f"{key}:peak", active)
            await client.rpush(f"{key}:starts", name)
            until = await redis_clock(client) + hold_ms
            while True:  # the Redis clock, which the test and every scheduler share
                if await redis_clock(client) >= until:
                    break
                await asyncio.sleep(0.02)
            await client.rpush(f"{key}:ends", name)
        finally:
            await client.decr(f"{key}:active")

    interval_s = float(os.environ.get("BUILTIN_INTERVAL_S", "0.1"))
    return Builtin(builtin_schedule(BUILTIN_ID, "conveyor.slow", interval_s, ScheduleKind.MAINTENANCE), run)


async def main() -> None:
    client = connect(os.environ["REDIS_URL"])
    prefix = os.environ["SCHED_PREFIX"]
    builtin = slow_run(client, prefix, os.environ.get("SCHED_NAME", str(os.getpid())),
                       int(os.environ.get("BUILTIN_HOLD_MS", "0")))
    scheduler = Scheduler(client, prefix=prefix, lease_s=float(os.environ["SCHED_LEASE_S"]),
                          maintenance_interval_s=None, max_sleep_s=0.5, builtins=[builtin])
    await scheduler.start()
    print("started", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # until the test closes stdin
    await scheduler.close()
    print(f"lost_claims={scheduler.stats.lost_claims}", flush=True)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
