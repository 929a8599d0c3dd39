"""The Redis server's clock: scripts read it (principle 3); tools compare processes' clocks with it."""

from __future__ import annotations

import time

from conveyor.redis.connection import RedisClient


async def redis_now_ms(client: RedisClient) -> int:
    """The server's time in epoch milliseconds (TIME)."""
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def clock_offset_ms(client: RedisClient) -> float:
    """This process's clock minus the server's, in ms, taken at the middle of one TIME round trip
    (so the network delay cancels out to within half the round trip)."""
    before = time.time()
    seconds, micros = await client.time()
    after = time.time()
    return round(((before + after) / 2 - (int(seconds) + int(micros) / 1e6)) * 1000, 1)
