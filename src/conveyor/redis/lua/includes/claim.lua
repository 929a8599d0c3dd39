-- Claim helper: promote due delayed jobs, then lease up to `want` ready jobs.
-- Needs common.lua. Returns a flat list: next_due_in_ms, then 6 fields per job:
-- id, token, attempt, name, data, opts.

local function promote_due(meta, ready, delayed, prefix, now, limit)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
  for i = 1, #due do
    local jk = prefix .. 'job:' .. due[i]
    redis.call('HSET', jk, 'state', 'waiting')
    push_ready(meta, ready, jk, due[i])
  end
  if #due > 0 then
    redis.call('ZREM', delayed, unpack(due))
  end
  return #due
end

local function next_due_in(delayed, now)
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if first[2] == nil then return -1 end
  local d = tonumber(first[2]) - now
  if d < 0 then d = 0 end
  return d
end

local function claim(k, prefix, worker, lease_ms, want, now, maxlen)
  local out = {0}
  promote_due(k.meta, k.ready, k.delayed, prefix, now, 1000)
  if want <= 0 or redis.call('HGET', k.meta, 'paused') == '1' then
    out[1] = next_due_in(k.delayed, now)
    return out
  end
  local popped = redis.call('ZPOPMIN', k.ready, want)
  local n = #popped / 2
  if n > 0 then
    local base = redis.call('HINCRBY', k.meta, 'token', n) - n
    local deadline = num(now + lease_ms)
    local started = num(now)
    local zargs = {}
    for i = 1, n do
      local id = popped[2 * i - 1]
      local jk = prefix .. 'job:' .. id
      local f = redis.call('HMGET', jk, 'name', 'data', 'opts')
      if f[1] then
        local token = num(base + i)
        local att = redis.call('HINCRBY', jk, 'attempts', 1)
        redis.call('HSET', jk, 'state', 'active', 'token', token, 'worker', worker, 'started', started)
        emit(k.events, maxlen, 'ev', 'active', 'id', id, 'att', att)
        zargs[#zargs + 1] = deadline
        zargs[#zargs + 1] = id
        out[#out + 1] = id
        out[#out + 1] = token
        out[#out + 1] = att
        out[#out + 1] = f[1]
        out[#out + 1] = f[2]
        out[#out + 1] = f[3] or ''
      end
    end
    if #zargs > 0 then
      redis.call('ZADD', k.active, unpack(zargs))
    end
    -- Chain the wake-up: more work is ready, so let another idle worker have it.
    if redis.call('ZCARD', k.ready) > 0 then wake(k.wake) end
  end
  if n < want then
    out[1] = next_due_in(k.delayed, now)
  end
  return out
end
