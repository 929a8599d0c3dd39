--[[ cost-extend-1: keep running runs' budget reservations alive (the worker's heartbeat).
KEYS: 1 cfg (every other key derived from it, same slot)
ARGV: 1 ttl ms (1..1 day), then pairs: tenant, run id
Only reservations that still exist are extended (ZADD XX). Returns the number extended, or
{-6, 0, reason} (INVALID_INPUT).
]]
--@include common
--@ledger

local base = string.sub(KEYS[1], 1, -4)
local ttl = int_in(ARGV[1], 1, 86400000)
if not ttl or #ARGV % 2 ~= 1 or #ARGV > 2001 then return {-6, 0, 'extend arguments'} end
local now = now_ms()
local n = 0
for i = 2, #ARGV, 2 do
  if valid_name(ARGV[i], 1) and valid_name(ARGV[i + 1], 1) then
    local rx = base .. 'rx:' .. ARGV[i]
    n = n + redis.call('ZADD', rx, 'XX', 'CH', num(now + ttl), ARGV[i + 1])
    redis.call('PEXPIRE', rx, ttl + DAY)
    redis.call('PEXPIRE', base .. 'rv:' .. ARGV[i], ttl + DAY)
  end
end
return n
