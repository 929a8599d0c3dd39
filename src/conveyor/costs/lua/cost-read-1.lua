--[[ cost-read-1: one consistent read of the ledger (read only).
KEYS: 1 cfg (every other key derived from it, same slot)
ARGV: 1 what ('usage' | 'budgets'), then
      usage: 2 first day, 3 last day (day numbers, at most 400 apart), 4.. tenants (at most 1000;
             days x tenants at most 40,000)
      budgets: 2.. tenants (at most 1000)
Returns: {now_ms, cfg fields (flat), rows}; usage rows: {day, tenant, fields (flat)} for each
bucket that exists; budgets rows: {tenant, budget fields (flat), spent nano, reserved nano,
reservations, period id, period start ms, next period start ms}.
]]
--@include common
--@ledger

local base = string.sub(KEYS[1], 1, -4)
local now = now_ms()
local cfg = redis.call('HGETALL', KEYS[1])
local rows = {}
if ARGV[1] == 'usage' then
  local first, last = int_in(ARGV[2], 0, 1e7), int_in(ARGV[3], 0, 1e7)
  if not (first and last) or last < first or last - first > 400 or #ARGV > 1003
      or (last - first + 1) * (#ARGV - 3) > 40000 then
    return {-6, 0, 'usage range'}
  end
  for d = first, last do
    for i = 4, #ARGV do
      local h = redis.call('HGETALL', day_key(base, d, ARGV[i]))
      if #h > 0 then rows[#rows + 1] = {d, ARGV[i], h} end
    end
  end
elseif ARGV[1] == 'budgets' then
  if #ARGV > 1001 then return {-6, 0, 'too many tenants'} end
  for i = 2, #ARGV do
    local t = ARGV[i]
    local b = redis.call('HGETALL', base .. 'b:' .. t)
    if #b > 0 then
      local per = redis.call('HGET', base .. 'b:' .. t, 'period')
      local pid, start, nxt = period(per, now)
      local held, n = reserved(base, t, now)
      rows[#rows + 1] = {t, b, num(period_spent(base, t, per, now)), num(held), n, tostring(pid), num(start), num(nxt)}
    end
  end
else
  return {-6, 0, 'what'}
end
return {num(now), cfg, rows}
