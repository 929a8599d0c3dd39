--[[ limiter-state-5: one consistent snapshot of a named limiter (read only).
KEYS: 1 cfg, 2 st, 3 exp, 4 info, 5 use (see limiter.lua)
ARGV: none
Returns: {now_ms, cfg fields (flat), st fields (flat), open ids, expired ids not yet swept, use fields (flat)}
         or {-1} when the limiter is unknown
Codes: 0 OK, -1 NOT_FOUND
]]
--@include common

if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local now = now_ms()
return {now, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('ZCARD', KEYS[3]),
        redis.call('ZCOUNT', KEYS[3], '-inf', now), redis.call('HGETALL', KEYS[5])}
