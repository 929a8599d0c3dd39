-- Claim helper: promote due delayed jobs, release held jobs this worker has handlers for, then lease
-- up to `want` ready jobs. Needs common.lua. Returns a flat list: next_due_in_ms, hold version (0 when
-- no job waits for a handler), then 6 fields per job: id, token, attempt, name, data, opts.
-- Queues without limits or groups (meta `lim` unset) take the plain path below; the others go
-- through claim_limited (limits.lua), which returns the same reply.

local function promote_due(meta, ready, delayed, prefix, now, limit)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
  for i = 1, #due do
    local jk = prefix .. 'job:' .. due[i]
    -- A record gone (deleted by hand, expired) or edited into another type is no job: its id only
    -- leaves `delayed` (an HSET would create a stray {state: waiting} record for it).
    if (job_call('HLEN', jk) or 0) > 0 then
      redis.call('HSET', jk, 'state', 'waiting')
      push_ready(meta, ready, jk, due[i])
    end
  end
  call_chunked('ZREM', delayed, nil, due, 1)
  return #due
end

-- `first`: the head of `delayed` (ZRANGE 0 0 WITHSCORES) when the caller read it already.
local function next_due_in(delayed, now, first)
  first = first or redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if first[2] == nil then return -1 end
  local d = tonumber(first[2]) - now
  if d < 0 then d = 0 end
  return d
end

-- Lease jobs ids[from], ids[from + step], ... (ids taken out of their ready set by the caller);
-- charged[id] (limits path) records the cost units a cost limiter charged. Appends to `out`.
-- Returns how many ids it looked at, and the ids it leased (the others had no record to lease).
local function lease(k, prefix, worker, lease_ms, now, maxlen, ids, from, step, charged, out)
  local n = 0
  local last = #ids
  local got = {}
  if last < from then return 0, got end
  n = math.floor((last - from) / step) + 1
  local base = reserve(k.meta, 'token', n) - n
  local deadline = num(now + lease_ms)
  local started = num(now)
  local zargs = {}
  local i = 0
  for j = from, last, step do
    i = i + 1
    local id = ids[j]
    local jk = prefix .. 'job:' .. id
    -- (a record gone, or edited into another type, is no job: its id is dropped)
    local f = job_call('HMGET', jk, 'name', 'data', 'opts', 'attempts')
    if f and f[1] then
      local token = num(base + i)
      -- One write per job: the attempt count rides in the same HSET as the lease fields.
      local att = (tonumber(f[4]) or 0) + 1
      -- A count edited by hand past any real one (or negative, inf, nan) reads as unreadable: 0.
      if not (att >= 1 and att <= 1000000) then att = 1 end
      if charged and charged[id] then
        redis.call('HSET', jk, 'state', 'active', 'token', token, 'worker', worker, 'started', started,
          'attempts', att, 'chg', charged[id])
      else
        redis.call('HSET', jk, 'state', 'active', 'token', token, 'worker', worker, 'started', started,
          'attempts', att)
      end
      emit(k.events, maxlen, 'ev', 'active', 'id', id, 'att', att, 'worker', worker)
      zargs[#zargs + 1] = deadline
      zargs[#zargs + 1] = id
      got[#got + 1] = id
      out[#out + 1] = id
      out[#out + 1] = token
      out[#out + 1] = att
      out[#out + 1] = f[1]
      out[#out + 1] = f[2]
      out[#out + 1] = f[3] or ''
    end
  end
  call_chunked('ZADD', k.active, nil, zargs, 2)
  return n, got
end

-- Jobs no worker had a handler for wait in <p>hold:<name> (a zset scored by hold time), their
-- names in <p>holds; meta hwait counts them (they are waiting jobs) and hver changes whenever one is
-- held, so a worker sends its handler names once per change. Moves up to `limit` held jobs of
-- `names` back to their ready sets; returns how many moved.
local function unhold(k, prefix, names, limit)
  local moved = 0
  for i = 1, #names do
    local hk = prefix .. 'hold:' .. names[i]
    local ids = index_call('ZRANGE', hk, 0, limit - moved - 1)
    for j = 1, #ids do
      local jk = prefix .. 'job:' .. ids[j]
      if job_call('HDEL', jk, 'held') then  -- (a record edited into another type only leaves)
        push_ready(k.meta, k.ready, jk, ids[j])
      end
    end
    call_chunked('ZREM', hk, nil, ids, 1)
    moved = moved + #ids
    if redis.call('EXISTS', hk) == 0 then index_call('SREM', prefix .. 'holds', names[i]) end
    if moved >= limit then break end
  end
  if moved > 0 then incr(k.meta, 'hwait', -moved) end
  return moved
end

--@lazy limits

local function claim(k, prefix, worker, lease_ms, want, now, maxlen, names)
  local out = {0, 0}
  -- The head of `delayed` tells both whether a promotion is due and, when none is, how long until the
  -- next one: one call on the common path (nothing delayed, or nothing due yet).
  local head = redis.call('ZRANGE', k.delayed, 0, 0, 'WITHSCORES')
  if head[2] and tonumber(head[2]) <= now then
    promote_due(k.meta, k.ready, k.delayed, prefix, now, 1000)
    head = nil
  end
  local m = redis.call('HMGET', k.meta, 'paused', 'lim', 'hwait', 'hver', 'events', 'token')
  EVENTS_MODE = m[5] or ''
  COUNTERS[k.meta .. ' token'] = tonumber(m[6]) or 0
  if (tonumber(m[3]) or 0) > 0 then
    if #names > 0 and unhold(k, prefix, names, 1000) > 0 then
      wake(k.wake)
      m[3] = redis.call('HGET', k.meta, 'hwait')
    end
    if (tonumber(m[3]) or 0) > 0 then out[2] = tonumber(m[4]) or 0 end
  end
  if m[1] == '1' then
    out[1] = next_due_in(k.delayed, now, head)
    return out
  end
  if m[2] then
    return claim_limited(k, prefix, worker, lease_ms, want, now, maxlen, out)
  end
  if want <= 0 then
    out[1] = next_due_in(k.delayed, now, head)
    return out
  end
  local popped = redis.call('ZPOPMIN', k.ready, want)
  local n = lease(k, prefix, worker, lease_ms, now, maxlen, popped, 1, 2, nil, out)
  -- Chain the wake-up: more work is ready, so let another idle worker have it (a pop short of `want`
  -- emptied `ready`).
  if n > 0 and #popped == want * 2 and redis.call('ZCARD', k.ready) > 0 then wake(k.wake) end
  if n < want then
    out[1] = next_due_in(k.delayed, now, head)
  end
  return out
end
