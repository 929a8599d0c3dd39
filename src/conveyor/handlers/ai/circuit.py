"""A circuit breaker per AI provider, kept in Redis so every worker of the fleet sees it.

After `failures` failures in a row (timeouts, connection errors, 5xx) the circuit opens for
`cooldown_s`: workers skip the provider instead of spending attempts on it. When the cool-down ends
the circuit is half-open: calls go through again, the first failure reopens it at once and a
success closes it. A 429 (or a 503 with Retry-After) sets a separate `hold` for the Retry-After time
without counting a failure.
An open circuit is measured from when it opened (`opened_at`) against the cool-down of the worker
asking, so a changed `cooldown_s` applies to circuits already open: lowered, they half-open sooner;
raised, they stay open longer, never past the new cool-down from when they opened. A circuit opened
by a script that wrote no `opened_at` (or one whose `opened_trip` is not the current trip) keeps
its `open_until`, read within the asking worker's cool-down.
All times come from the Redis clock. A field edited by hand into something no script writes (nan,
inf, a negative or fractional number, text, a time past the longest wait) reads as unset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from conveyor.limits.http import MAX_RETRY_AFTER_S
from conveyor.redis.connection import RedisClient
from conveyor.redis.keys import breaker_key

MAX_HOLD_MS = int(MAX_RETRY_AFTER_S * 1000)  # the longest Retry-After a provider is held for

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# A field of the breaker hash as a whole number in [0, ceiling], or 0 (unset) for anything else. A
# value edited by hand (nan, inf, 1e400, -5, 2.5, text, a time past the longest wait) would otherwise
# open the circuit for ever, keep it from ever opening, or fail every script that reads it.
_FIELD = """
local function field(name, ceiling)
  local v = tonumber(redis.call('HGET', KEYS[1], name) or '0')
  if v == nil or v ~= v or v < 0 or v > ceiling or v ~= math.floor(v) then return 0 end
  return v
end
-- When the circuit opened (or last opened) is over: when it opened plus the cool-down given, or
-- the stored open_until of a trip that recorded no opening time.
local function open_end(cooldown)
  local opened, trips = field('opened_at', now), field('trips', 2147483647)
  if opened > 0 and trips > 0 and field('opened_trip', 2147483647) == trips then return opened + cooldown end
  return field('open_until', now + cooldown)
end
"""

# KEYS[1] breaker hash; ARGV cooldown_ms, max_hold_ms. Returns ms until the provider may be called
# again (0: call it).
_CHECK = (
    _NOW
    + _FIELD
    + """
local open_until = open_end(tonumber(ARGV[1]))
local hold_until = field('hold_until', now + tonumber(ARGV[2]))
local wait = math.max(open_until, hold_until) - now
if wait > 0 then return wait end
return 0
"""
)

# KEYS[1] breaker hash; ARGV threshold, cooldown_ms, ttl_ms.
# Returns the ms the circuit is now open (0: still closed).
_FAILURE = (
    _NOW
    + _FIELD
    + """
local threshold = tonumber(ARGV[1])
local open_until = open_end(tonumber(ARGV[2]))
if open_until > now then return open_until - now end
local failures
if open_until > 0 then
  failures = threshold
else
  failures = field('failures', 2147483647) + 1
  redis.call('HSET', KEYS[1], 'failures', failures)
end
if failures >= threshold then
  local trips = field('trips', 2147483647) + 1
  redis.call('HSET', KEYS[1], 'open_until', now + tonumber(ARGV[2]), 'failures', 0, 'trips', trips,
             'opened_at', now, 'opened_trip', trips)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return tonumber(ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 0
"""
)

# KEYS[1] breaker hash; ARGV hold_ms, ttl_ms, max_hold_ms. Extends the hold to now + hold_ms.
_HOLD = (
    _NOW
    + _FIELD
    + """
local hold_until = field('hold_until', now + tonumber(ARGV[3]))
local wanted = now + tonumber(ARGV[1])
if wanted > hold_until then redis.call('HSET', KEYS[1], 'hold_until', wanted) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return wanted - now
"""
)


class CircuitBreaker:
    """Shared breaker state per provider name; `client` is called lazily (the app connects on use)."""

    def __init__(
        self,
        client: Callable[[], RedisClient],
        *,
        prefix: str = "cv",
        failures: int = 5,
        cooldown_s: float = 30.0,
    ) -> None:
        if failures < 1:
            raise ValueError("breaker failures must be >= 1")
        if cooldown_s <= 0:
            raise ValueError("breaker cooldown must be > 0")
        self._client = client
        self.prefix = prefix
        self.failures = failures
        self.cooldown_ms = int(cooldown_s * 1000)
        self.ttl_ms = max(self.cooldown_ms * 10, 600_000)

    async def _eval(self, script: str, name: str, *args: Any) -> float:
        """The script's wait in seconds, within [0, the longest wait a breaker sets]."""
        result = await self._client().eval(script, 1, breaker_key(self.prefix, name), *args)
        return min(max(int(result), 0), max(self.cooldown_ms, MAX_HOLD_MS)) / 1000

    async def open_for(self, name: str) -> float:
        """Seconds until `name` may be called (0: closed or half-open)."""
        return await self._eval(_CHECK, name, self.cooldown_ms, MAX_HOLD_MS)

    async def record_failure(self, name: str) -> float:
        """Count a failure; returns the seconds the circuit is open for (0: still closed)."""
        return await self._eval(_FAILURE, name, self.failures, self.cooldown_ms, self.ttl_ms)

    async def hold(self, name: str, seconds: float) -> float:
        """Skip `name` for `seconds` (its Retry-After, at most MAX_HOLD_MS) without counting a failure."""
        hold_ms = min(MAX_HOLD_MS, max(1, int(seconds * 1000))) if math.isfinite(seconds) else MAX_HOLD_MS
        return await self._eval(_HOLD, name, hold_ms, self.ttl_ms, MAX_HOLD_MS)

    async def record_success(self, name: str) -> None:
        await self._client().delete(breaker_key(self.prefix, name))

    async def state(self, name: str) -> dict[str, str]:
        raw = await self._client().hgetall(breaker_key(self.prefix, name))
        return {str(k): str(v) for k, v in raw.items()}
