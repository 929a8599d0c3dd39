"""The Redis server's clock: scripts read it (principle 3); tools compare processes' clocks with it.

On a Cluster every node has its own clock, and a plain TIME goes to whichever node the client picks.
A time that is compared with keys must be the clock of the node that holds them, the one their
scripts read; so every read here runs lua/time-1.lua with one of those keys, which routes it to that
node (on a standalone server or Sentinel: the one primary). Errors come out as redis-py raises them,
as a plain TIME's would: each caller handles them as it handles its other reads.
"""

from __future__ import annotations

import time

from redis.exceptions import NoScriptError

from conveyor.redis.connection import RedisClient
from conveyor.redis.scripts import core_script


async def redis_now_ms(client: RedisClient, key: str) -> int:
    """Now in epoch ms on the clock of the node that holds `key`'s slot (`key` is not read). Read
    only, so a resend after a lost reply is harmless; a server that lost its script cache gets the
    source."""
    script = core_script("time")
    try:
        reply = await client.evalsha(script.sha, 1, key)
    except NoScriptError:
        reply = await client.eval(script.source, 1, key)
    return int(reply)


async def clock_offset_ms(client: RedisClient, key: str) -> float:
    """This process's clock minus the clock of the node holding `key`, in ms, taken at the middle of
    one round trip (so the network delay cancels out to within half the round trip)."""
    before = time.time()
    now_ms = await redis_now_ms(client, key)
    after = time.time()
    return round(((before + after) / 2) * 1000 - now_ms, 1)
