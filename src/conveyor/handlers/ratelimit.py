"""A fleet-wide fixed-window send limit per queue (e.g. emails per minute), counted in Redis."""

from __future__ import annotations

from collections.abc import Callable

from conveyor.errors import RateLimited
from conveyor.redis.connection import RedisClient
from conveyor.redis.keys import send_rate_key

# KEYS[1] counter; ARGV limit, window_ms. Returns 0 when a slot was taken, else ms until the window ends.
_TAKE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) ttl = tonumber(ARGV[2]) end
  return ttl
end
return 0
"""


class SendRate:
    """`per_window` sends per `window_s` for one queue; over the limit raises `RateLimited`."""

    def __init__(
        self,
        client: Callable[[], RedisClient],
        *,
        prefix: str,
        queue: str,
        per_window: int,
        window_s: float = 60.0,
    ) -> None:
        self._client = client
        self.key = send_rate_key(prefix, queue)
        self.per_window = per_window
        self.window_ms = int(window_s * 1000)

    async def take(self) -> None:
        if self.per_window <= 0:
            return
        wait_ms = int(await self._client().eval(_TAKE, 1, self.key, self.per_window, self.window_ms))
        if wait_ms > 0:
            raise RateLimited(retry_after=wait_ms / 1000, reason=f"send limit of {self.per_window} per window reached")
