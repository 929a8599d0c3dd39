--[[ cost-record-1: record what runs used: tokens per model, priced, per tenant, task and day.
KEYS: 1 cfg (`<prefix>:{costs}:cfg`; every other key is derived from it, same slot)
ARGV: 1 number of runs (1..1000), then per run: run id (1..200 chars), tenant ('' = no group),
      task (1..200), estimated tokens (0..its tokens in + out: the part that is an estimate, not a
      provider's report), number of models m (0..20), then m times: model ('' = unnamed), tokens in,
      tokens out (0..1e9 each). A run with m = 0 only gives back its budget reservation.
Prices: cfg fields `pi:<model>` / `po:<model>` (nano-units per 1M tokens in / out), else `pi:*` /
`po:*`, else 0; a stored price or retention that is not a whole number in its range counts as not set.
Every argument is checked before the first write.
Writes: d:<day>:<tenant> (fields i:/o:/c:/n:, and e: (estimated tokens) / en: (runs with an
estimate), plus the task: `c:<task>`; '' task = totals), expiring
retention days after the day; m:<yyyymm>:<tenant> (c, i, o, n); tenants (zset, last use ms);
u:<day> (run ids recorded, 2 days); frees the run's reservation (rv:/rx:<tenant>); events
`budget_soft` / `budget_hard` once per period when a record crosses the tenant's limit.
Returns: flat list per run: code (0 recorded, -4 CONFLICT: this run was already recorded, nothing
changed, -6: at the prices set the run costs over 1,000,000 currency units, so nothing of it is
counted and only its reservation is given back), cost in nano-units; or {-6, position, reason}
(INVALID_INPUT: nothing written).
]]
--@include common
--@ledger

local base = string.sub(KEYS[1], 1, -4)
local n = int_in(ARGV[1], 1, 1000)
if not n then return {-6, 0, 'number of runs'} end
local runs, i = {}, 2
for r = 1, n do
  local run = {id = ARGV[i], tenant = ARGV[i + 1], task = ARGV[i + 2], est = int_in(ARGV[i + 3], 0, 2e10),
               models = {}}
  local m = int_in(ARGV[i + 4], 0, 20)
  if not (valid_name(run.id, 1) and valid_name(run.tenant, 0) and valid_name(run.task, 1) and run.est and m) then
    return {-6, r, 'run id, tenant, task, estimated tokens or model count'}
  end
  i = i + 5
  local tokens = 0
  for _ = 1, m do
    local model, tin, tout = ARGV[i], int_in(ARGV[i + 1], 0, 1e9), int_in(ARGV[i + 2], 0, 1e9)
    if not (valid_name(model, 0) and tin and tout) then return {-6, r, 'model or token counts'} end
    run.models[#run.models + 1] = {model, tin, tout}
    tokens = tokens + tin + tout
    i = i + 3
  end
  if run.est > tokens then return {-6, r, 'estimated tokens past the tokens counted'} end
  runs[r] = run
end
if i ~= #ARGV + 1 then return {-6, 0, 'argument count'} end

local cfg = KEYS[1]
-- A price that cannot be one (edited by hand) counts as not set.
local function price(field, model)
  return stored_int(redis.call('HGET', cfg, field .. model), MAX_PRICE_NANO)
    or stored_int(redis.call('HGET', cfg, field .. '*'), MAX_PRICE_NANO) or 0
end
for r, run in ipairs(runs) do
  local cost, tin, tout = 0, 0, 0
  for _, mt in ipairs(run.models) do
    cost = cost + (mt[2] * price('pi:', mt[1]) + mt[3] * price('po:', mt[1])) / 1e6
    tin, tout = tin + mt[2], tout + mt[3]
  end
  -- Refused alone (the batch's other runs are recorded): at these prices its usage cannot be real.
  run.over = cost > MAX_RUN_NANO
  run.cost, run.tin, run.tout = math.floor(cost + 0.5), tin, tout
end

local now = now_ms()
local day = math.floor(now / DAY)
local keep = retention_days(cfg) * DAY
local y, mo = civil(day)
local month = y * 100 + mo
local _, _, month_end = period('m', now)
local out = {}
for _, run in ipairs(runs) do
  local seen = base .. 'u:' .. day
  local t = run.tenant
  if redis.call('SISMEMBER', seen, run.id) == 1 or redis.call('SISMEMBER', base .. 'u:' .. (day - 1), run.id) == 1 then
    out[#out + 1], out[#out + 2] = -4, 0
  elseif run.over then
    redis.call('HDEL', base .. 'rv:' .. t, run.id)
    redis.call('ZREM', base .. 'rx:' .. t, run.id)
    out[#out + 1], out[#out + 2] = -6, 0
  else
    redis.call('SADD', seen, run.id)
    redis.call('PEXPIREAT', seen, num((day + 2) * DAY))
    redis.call('HDEL', base .. 'rv:' .. t, run.id)
    redis.call('ZREM', base .. 'rx:' .. t, run.id)
    if #run.models > 0 then
      local dk, mk = day_key(base, day, t), month_key(base, month, t)
      local before = {d = stored_total(redis.call('HGET', dk, 'c:')), m = stored_total(redis.call('HGET', mk, 'c'))}
      for _, f in ipairs({'', run.task}) do
        incr(dk, 'i:' .. f, num(run.tin))
        incr(dk, 'o:' .. f, num(run.tout))
        incr(dk, 'c:' .. f, num(run.cost))
        incr(dk, 'n:' .. f, 1)
        if run.est > 0 then
          incr(dk, 'e:' .. f, num(run.est))
          incr(dk, 'en:' .. f, 1)
        end
      end
      redis.call('PEXPIREAT', dk, num((day + 1) * DAY + keep))
      incr(mk, 'i', num(run.tin))
      incr(mk, 'o', num(run.tout))
      incr(mk, 'c', num(run.cost))
      incr(mk, 'n', 1)
      redis.call('PEXPIREAT', mk, num(month_end + keep))
      redis.call('ZADD', base .. 'tenants', num(now), t)
      local bk = base .. 'b:' .. t
      local b = redis.call('HMGET', bk, 'period', 'soft', 'hard', 'soft_at', 'hard_at')
      if b[1] then
        local pid = period(b[1], now)
        local was = before[b[1]]
        local is = was + run.cost
        local soft, hard = stored_int(b[2], MAX_LIMIT_NANO), stored_int(b[3], MAX_LIMIT_NANO)
        for _, lim in ipairs({{'soft', soft, b[4], 'soft_at'}, {'hard', hard, b[5], 'hard_at'}}) do
          if lim[2] and was < lim[2] and is >= lim[2] and lim[3] ~= tostring(pid) then
            redis.call('HSET', bk, lim[4], pid)
            event(base, {'type', 'budget_' .. lim[1], 'tenant', t, 'period', b[1], 'period_id', tostring(pid),
                         'spent_nano', num(is), 'limit_nano', num(lim[2]), 'at_ms', num(now)})
          end
        end
      end
    end
    out[#out + 1], out[#out + 2] = 0, run.cost
  end
end
-- Tenants not heard of within the retention are forgotten (their buckets have expired too).
redis.call('ZREMRANGEBYSCORE', base .. 'tenants', '-inf', '(' .. num(now - keep - 31 * DAY))
return out
