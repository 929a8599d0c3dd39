-- Shared helpers, flattened into every script by the loader (conveyor/redis/scripts.py).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integral numbers as exact decimal strings (tostring would print 1.7e+12).
local function num(n)
  return string.format('%.0f', n)
end

-- Ready-set score: higher priority first, then arrival order (seq from meta).
-- priority is in [-1000, 1000]; (1000 - p) * 2^41 + seq stays below 2^53.
local function ready_score(meta, priority)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  return num((1000 - (tonumber(priority) or 0)) * 2199023255552 + seq)
end

local function emit(events, maxlen, ...)
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', ...)
end

-- At most one marker waits in the wake list; idle workers block on it.
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('LPUSH', wake_key, '1')
  end
end

--@include groups

-- Grouped jobs go to their group's ready set (see groups.lua), the others to `ready`.
local function push_ready(meta, ready, jk, id)
  local f = redis.call('HMGET', jk, 'prio', 'group')
  if f[2] then
    group_push(meta, ready, f[2], ready_score(meta, f[1]), id)
  else
    redis.call('ZADD', ready, ready_score(meta, f[1]), id)
  end
end

-- Adds to `delayed` and wakes sleepers when this job is now the earliest, so they re-time their sleep.
local function push_delayed(delayed, wake_key, id, due)
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  redis.call('ZADD', delayed, num(due), id)
  if first[2] == nil or tonumber(first[2]) > due then
    redis.call('LPUSH', wake_key, '1')
    redis.call('LTRIM', wake_key, 0, 0)
  end
end
