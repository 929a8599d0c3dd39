-- Cost ledger helpers (prepended to every costs/lua script by conveyor/costs/ledger.py).
-- Every key shares the hash tag of KEYS[1] (`<prefix>:{costs}:cfg`); the others are derived from it.
-- Money is in nano-units of the configured currency (1e-9), as integers.

local DAY = 86400000
local NAME_MAX = 200
local MAX_RUN_NANO = 1e15  -- one run may cost at most 1,000,000 currency units

-- Days since 1970-01-01 -> year, month, day (proleptic Gregorian, UTC).
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- The period ('d' day, 'm' month) holding `now`: id (day number, or yyyymm), start ms, next start ms.
local function period(kind, now)
  local day = math.floor(now / DAY)
  if kind == 'm' then
    local y, m = civil(day)
    local ny, nm = y, m + 1
    if nm == 13 then ny, nm = y + 1, 1 end
    return y * 100 + m, days_from_civil(y, m, 1) * DAY, days_from_civil(ny, nm, 1) * DAY
  end
  return day, day * DAY, (day + 1) * DAY
end

local MAX_PRICE_NANO = 1e13  -- 10,000 currency units per million tokens (costs/model.py MAX_PRICE)
local MAX_RETENTION_DAYS = 3660
local MAX_LIMIT_NANO = 1e18  -- a budget's amounts (costs/model.py MAX_AMOUNT)

-- A whole number stored in the ledger (a price, the retention) in [0, hi], or nil when it is not one:
-- edited by hand into 'nan', 'inf', '-5', '2.5', '1e3', '0x10' or text. tonumber takes all of those,
-- and a NaN or negative price or retention would spoil every record priced or dated by it.
local function stored_int(v, hi)
  if type(v) ~= 'string' or #v > 19 or not string.match(v, '^%d+$') then return nil end
  local n = tonumber(v)
  if n > hi then return nil end
  return n
end

-- A stored total or reservation (nano): one that is not a whole number counts as 0, as reports read
-- it and as the next record starts it again.
local function stored_total(v)
  return stored_int(v, MAX_COUNT) or 0
end

-- Days a bucket is kept after its period (cfg `retention_days`; 90 when it is not set or unreadable).
local function retention_days(cfg)
  local days = stored_int(redis.call('HGET', cfg, 'retention_days'), MAX_RETENTION_DAYS)
  if not days or days < 1 then return 90 end
  return days
end

local function day_key(base, day, tenant) return base .. 'd:' .. day .. ':' .. tenant end
local function month_key(base, month, tenant) return base .. 'm:' .. month .. ':' .. tenant end

-- The tenant's cost (nano) in the period of kind `kind` holding `now`.
local function period_spent(base, tenant, kind, now)
  local pid = period(kind, now)
  if kind == 'm' then return stored_total(redis.call('HGET', month_key(base, pid, tenant), 'c')) end
  return stored_total(redis.call('HGET', day_key(base, pid, tenant), 'c:'))
end

-- A tenant holds at most this many live reservations (costs/ledger.py MAX_LIVE_RESERVATIONS): the
-- budget check sums them in one call, so the sum stays bounded, and whole (cost-admit-1 makes a run
-- wait rather than reserve past it).
local MAX_LIVE = 10000

-- Cost reserved by runs admitted and not yet recorded (reservations past their expiry do not count),
-- and how many are live (counted exactly; the sum covers the first MAX_LIVE, all of them unless
-- more were written than cost-admit-1 reserves).
local function reserved(base, tenant, now)
  local rx = base .. 'rx:' .. tenant
  local live = redis.call('ZRANGEBYSCORE', rx, '(' .. num(now), '+inf', 'LIMIT', 0, MAX_LIVE)
  local sum = 0
  for _, id in ipairs(live) do sum = sum + stored_total(redis.call('HGET', base .. 'rv:' .. tenant, id)) end
  local n = #live
  if n >= MAX_LIVE then n = redis.call('ZCOUNT', rx, '(' .. num(now), '+inf') end
  return sum, n
end

-- Drop the tenant's expired reservations (their runs never reported back within a lease).
local function sweep_reservations(base, tenant, now)
  local rx, rv = base .. 'rx:' .. tenant, base .. 'rv:' .. tenant
  local old = redis.call('ZRANGEBYSCORE', rx, '-inf', num(now), 'LIMIT', 0, 1000)
  if #old > 0 then
    redis.call('HDEL', rv, unpack(old))
    redis.call('ZREM', rx, unpack(old))
  end
end

local function event(base, fields)
  redis.call('XADD', base .. 'events', 'MAXLEN', '~', 10000, '*', unpack(fields))
end

local function valid_name(s, lo)
  return s and #s >= lo and #s <= NAME_MAX and not s:find('[%c]')
end
