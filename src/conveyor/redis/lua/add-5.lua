--[[ add-5: enqueue a batch of jobs, all or nothing.
KEYS: 1 meta, 2 ready, 3 delayed, 4 events, 5 wake
ARGV: 1 prefix (e.g. "cv:{q}:"), 2 events maxlen, 3 job count,
      then 10 fields per job: id ('' = next number), idempotency key ('' = none), idempotency ttl ms,
      name, data (JSON), opts (JSON or ''), priority, delay ms, group ('' = none), cost ('' = none)
Grouped jobs wait in their group's ready set (see includes/groups.lua), not in `ready`.
Returns: 2 entries per job: id, status (1 created, 0 existing job with the same name and data)
         or {-4, id} when any id or key is taken by a job with other name or data (nothing written).
Codes: 0 OK, -4 CONFLICT
Events: added (id, name)
]]
--@include common

local meta, ready, delayed, events, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, maxlen, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local W = 10

-- Pass 1: find jobs that already exist (by id or idempotency key) and refuse conflicts.
local existing = {}
for i = 0, count - 1 do
  local b = 4 + i * W
  local id, ikey, name, data = ARGV[b], ARGV[b + 1], ARGV[b + 3], ARGV[b + 4]
  local found = nil
  if ikey ~= '' then
    found = redis.call('GET', prefix .. 'idem:' .. ikey)
  end
  if not found and id ~= '' then
    found = id
  end
  if found then
    local f = redis.call('HMGET', prefix .. 'job:' .. found, 'name', 'data')
    if f[1] then
      if f[1] ~= name or f[2] ~= data then
        return {-4, found}
      end
      existing[i] = found
    end
  end
end

local now = now_ms()
local created = num(now)
local out = {}
local woke = false
for i = 0, count - 1 do
  local b = 4 + i * W
  -- A key or id repeated inside this batch points at the job created earlier in this loop
  -- (the caller checked that the repeats carry the same name and data).
  local dup = existing[i]
  if not dup and ARGV[b + 1] ~= '' then
    dup = redis.call('GET', prefix .. 'idem:' .. ARGV[b + 1])
    if dup and redis.call('EXISTS', prefix .. 'job:' .. dup) == 0 then dup = nil end
  end
  if not dup and ARGV[b] ~= '' and redis.call('EXISTS', prefix .. 'job:' .. ARGV[b]) == 1 then
    dup = ARGV[b]
  end
  if dup then
    out[#out + 1] = dup
    out[#out + 1] = 0
  else
    local id, ikey, ittl = ARGV[b], ARGV[b + 1], ARGV[b + 2]
    local name, data, opts = ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
    local prio, delay = tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7])
    if id == '' then
      id = tostring(redis.call('HINCRBY', meta, 'id', 1))
    end
    local jk = prefix .. 'job:' .. id
    local fields = {'name', name, 'data', data, 'ts', created}
    if opts ~= '' then
      fields[#fields + 1] = 'opts'; fields[#fields + 1] = opts
    end
    if prio ~= 0 then
      fields[#fields + 1] = 'prio'; fields[#fields + 1] = prio
    end
    local group, cost = ARGV[b + 8], ARGV[b + 9]
    if group ~= '' then
      fields[#fields + 1] = 'group'; fields[#fields + 1] = group
    end
    if cost ~= '' then
      fields[#fields + 1] = 'cost'; fields[#fields + 1] = cost
    end
    if ikey ~= '' then
      fields[#fields + 1] = 'idem'; fields[#fields + 1] = ikey
      redis.call('SET', prefix .. 'idem:' .. ikey, id, 'PX', ittl)
    end
    if delay > 0 then
      fields[#fields + 1] = 'state'; fields[#fields + 1] = 'delayed'
      redis.call('HSET', jk, unpack(fields))
      push_delayed(delayed, wake_key, id, now + delay)
    else
      fields[#fields + 1] = 'state'; fields[#fields + 1] = 'waiting'
      redis.call('HSET', jk, unpack(fields))
      if group ~= '' then
        group_push(meta, ready, group, ready_score(meta, prio), id)
      else
        redis.call('ZADD', ready, ready_score(meta, prio), id)
      end
      woke = true
    end
    emit(events, maxlen, 'ev', 'added', 'id', id, 'name', name)
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
if woke then wake(wake_key) end
return out
