-- Limiter arithmetic shared by the queue limits (limits.lua) and the named limiters (limiter.lua).

local function load_fields(key, names)
  local v = redis.call('HMGET', key, unpack(names))
  local t = {}
  for i = 1, #names do t[names[i]] = tonumber(v[i]) end
  return t
end

-- TATs are stored to the microsecond, rounded up so a stored limiter never opens early.
local function fmt(x)
  return string.format('%.3f', math.ceil(x * 1000) / 1000)
end

-- GCRA: may `c` units start at `now`? A limiter lets `cap` units go at once, then one unit every `t`
-- ms; a job costing more than `cap` waits for a rested limiter and leaves it in debt.
-- Returns (new tat, nil) when allowed, else (nil, the ms time when it would be).
-- A claim that arrives at most `slack` ms late (default one interval) keeps the theoretical arrival
-- time, so the lateness of a claim is not lost for good (pacing reaches its limit); a later one (an
-- idle limiter) restarts from now, so idle time never becomes a burst.
local function gcra(tat, t, cap, c, now, slack)
  slack = math.max(t, slack or 0)
  if not tat or tat < now - slack then tat = now end
  local need = c
  if need > cap then need = cap end
  local at = tat - (cap - need) * t
  if at <= now then return tat + c * t, nil end
  return nil, at
end
