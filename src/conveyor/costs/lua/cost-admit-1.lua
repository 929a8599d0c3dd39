--[[ cost-admit-1: may a run of this tenant start? Checks the hard budget, reserves the estimate.
KEYS: 1 cfg (every other key derived from it, same slot)
ARGV: 1 run id (1..200 chars), 2 tenant (1..200), 3 reservation ttl ms (1..1 day)
A tenant without a hard limit is always admitted (nothing written). Otherwise the run is admitted
only while spent + reserved + estimate <= hard (and spent < hard) in the current period, and its
estimate is reserved under the run id until the ttl (cost-record-1 frees it; a resend of the same
run id is admitted again without a second reservation). A run that fits beside what is spent but not
beside the running runs' reservations is not over the budget: it is told to ask again soon (those
runs record what they really cost, or their reservations lapse); so is a run of a tenant already
holding MAX_LIVE (10,000) live reservations, whatever room the budget has, so the reservations
summed are always all of them. Time from Redis: periods are UTC days or months.
Returns: {0} admitted; {1, ms until the next period, spent, hard, mode ('wait'|'fail'), period,
         period id} refused (over the budget); {2, ms to wait before asking again, spent, hard, mode,
         period, period id, reserved} not yet (the running runs' reservations fill it, or are
         MAX_LIVE); or {-6, 0, reason} (INVALID_INPUT).
Events: budget_hard (once per period, at the first refusal over the budget or crossing).
]]
--@include common
--@ledger

local BUSY_RETRY_MS = 2000 -- a run waiting for running runs' reservations asks again this soon
local base = string.sub(KEYS[1], 1, -4)
local id, tenant, ttl = ARGV[1], ARGV[2], int_in(ARGV[3], 1, 86400000)
if not (valid_name(id, 1) and valid_name(tenant, 1) and ttl) then return {-6, 0, 'admit arguments'} end
local bk = base .. 'b:' .. tenant
local b = redis.call('HMGET', bk, 'period', 'hard', 'mode', 'est', 'hard_at')
local hard = stored_int(b[2], MAX_LIMIT_NANO)  -- a limit edited into something it cannot be: not set
if not (b[1] and hard) then return {0} end
local now = now_ms()
local rv, rx = base .. 'rv:' .. tenant, base .. 'rx:' .. tenant
if redis.call('HEXISTS', rv, id) == 1 then
  redis.call('ZADD', rx, num(now + ttl), id)
  return {0}
end
sweep_reservations(base, tenant, now)
local pid, _, next_start = period(b[1], now)
local spent = period_spent(base, tenant, b[1], now)
local held, live = reserved(base, tenant, now)
local est = stored_int(b[4], MAX_LIMIT_NANO) or 0
if spent >= hard or spent + est > hard then
  if b[5] ~= tostring(pid) then
    redis.call('HSET', bk, 'hard_at', pid)
    event(base, {'type', 'budget_hard', 'tenant', tenant, 'period', b[1], 'period_id', tostring(pid),
                 'spent_nano', num(spent), 'limit_nano', num(hard), 'at_ms', num(now)})
  end
  return {1, next_start - now, num(spent), num(hard), b[3] or 'wait', b[1], tostring(pid)}
end
if live >= MAX_LIVE or spent + held + est > hard then
  return {2, math.min(BUSY_RETRY_MS, next_start - now), num(spent), num(hard), b[3] or 'wait', b[1], tostring(pid),
          num(held)}
end
if est > 0 then
  redis.call('HSET', rv, id, num(est))
  redis.call('ZADD', rx, num(now + ttl), id)
  redis.call('PEXPIRE', rv, ttl + DAY)
  redis.call('PEXPIRE', rx, ttl + DAY)
end
return {0}
