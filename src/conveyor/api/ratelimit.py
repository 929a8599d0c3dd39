"""Key check and per-key rate limit in one Redis round trip, shared by every API process.

The limit is GCRA (a token bucket kept as one "theoretical arrival time" per key): `rate` requests
per second with a burst of one second's worth. Time comes from Redis, so processes on skewed
clocks agree. The secret's hash is compared inside the script; the stored value is itself a hash
of a 256-bit secret, so a timing difference reveals nothing useful.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from conveyor.redis.scripts import Script

AUTHORIZE_LUA = """
-- KEYS: 1 key record (hash), 2 rate state (string)
-- ARGV: 1 secret hash, 2 default rate per second (0 = unlimited)
-- Returns {-1} unknown key or wrong secret; {2, scopes} allowed, no limit; {1, scopes} allowed;
-- {0, scopes, retry_after_us} limited.
local rec = redis.call('HMGET', KEYS[1], 'hash', 'scopes', 'rate')
if not rec[1] or rec[1] ~= ARGV[1] then return {-1} end
local rate = tonumber(rec[3]) or tonumber(ARGV[2])
if rate <= 0 then return {2, rec[2]} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = 1000000 / rate
local burst = interval * math.max(rate, 1)
local tat = tonumber(redis.call('GET', KEYS[2])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - burst - now
if wait > 0 then return {0, rec[2], string.format('%.0f', wait)} end
redis.call('SET', KEYS[2], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, rec[2]}
"""

AUTHORIZE = Script("authorize", AUTHORIZE_LUA, hashlib.sha1(AUTHORIZE_LUA.encode()).hexdigest(), 2)


@dataclass(frozen=True, slots=True)
class Decision:
    known: bool
    allowed: bool
    scopes: list[str]
    retry_after_s: int = 0
    unlimited: bool = False  # no rate limit: the check may be cached (api/keycache.py)


def decide(reply: list[object]) -> Decision:
    code = int(str(reply[0]))
    if code < 0:
        return Decision(False, False, [])
    scopes = [s for s in str(reply[1]).split(",") if s]
    if code >= 1:
        return Decision(True, True, scopes, unlimited=code == 2)
    return Decision(True, False, scopes, max(1, math.ceil(int(str(reply[2])) / 1_000_000)))
