--[[ cost-budget-1: set or clear a tenant's budget.
KEYS: 1 cfg (every other key derived from it, same slot)
ARGV: 1 op ('set' | 'clear'), 2 tenant (1..200 chars); set: 3 period ('d' | 'm'), 4 soft nano
      ('' none), 5 hard nano ('' none), 6 mode ('wait' | 'fail'), 7 estimate per run nano, 8 config
      JSON as given (shown back)
Amounts 0..1e18 nano; at least one of soft and hard; soft <= hard. Changing the period forgets which
period's soft/hard events were sent. The tenant joins `tenants` (known from now on).
Returns: {0, 1} set; {0, 1} cleared; {-1} NOT_FOUND (clear of a tenant without a budget);
         {-6, 0, reason} INVALID_INPUT.
]]
--@include common
--@ledger

local base = string.sub(KEYS[1], 1, -4)
local op, tenant = ARGV[1], ARGV[2]
if not valid_name(tenant, 1) then return {-6, 0, 'tenant'} end
local bk = base .. 'b:' .. tenant
if op == 'clear' then
  if redis.call('DEL', bk) == 0 then return {-1} end
  redis.call('SREM', base .. 'bt', tenant)
  return {0, 1}
end
if op ~= 'set' then return {-6, 0, 'op'} end
local per, mode, est = ARGV[3], ARGV[6], int_in(ARGV[7], 0, 1e18)
local soft = ARGV[4] ~= '' and int_in(ARGV[4], 0, 1e18) or nil
local hard = ARGV[5] ~= '' and int_in(ARGV[5], 0, 1e18) or nil
if (per ~= 'd' and per ~= 'm') or (mode ~= 'wait' and mode ~= 'fail') or not est or #ARGV ~= 8 or #ARGV[8] > 2000 then
  return {-6, 0, 'budget fields'}
end
if (ARGV[4] ~= '' and not soft) or (ARGV[5] ~= '' and not hard) or not (soft or hard) then
  return {-6, 0, 'soft and hard limits'}
end
if soft and hard and soft > hard then return {-6, 0, 'soft limit above hard limit'} end
if redis.call('HGET', bk, 'period') ~= per then redis.call('HDEL', bk, 'soft_at', 'hard_at') end
redis.call('HSET', bk, 'period', per, 'mode', mode, 'est', num(est), 'cfg', ARGV[8])
if soft then redis.call('HSET', bk, 'soft', num(soft)) else redis.call('HDEL', bk, 'soft') end
if hard then redis.call('HSET', bk, 'hard', num(hard)) else redis.call('HDEL', bk, 'hard') end
redis.call('SADD', base .. 'bt', tenant)
redis.call('ZADD', base .. 'tenants', 'NX', num(now_ms()), tenant)
return {0, 1}
