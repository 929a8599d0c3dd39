--[[ add-5: enqueue a batch of jobs, all or nothing.
KEYS: 1 meta, 2 ready, 3 delayed, 4 events, 5 wake
ARGV: 1 prefix (e.g. "cv:{q}:"), 2 events maxlen, 3 job count, then per job either
      'p', name, data (JSON)  -- a plain job: generated id, default options, ready now
      'r', name, data (JSON)  -- generated id, every other field as the previous job's
      or 'f' and 10 fields: id ('' = next number), idempotency key ('' = none), idempotency ttl ms,
      name, data (JSON), opts (JSON or ''), priority, delay ms, group ('' = none), cost ('' = none)
Grouped jobs wait in their group's ready set (see includes/groups.lua), not in `ready`.
The queue keys an add writes (meta, ready, delayed, events; and for grouped ready jobs the queue's
group keys and each group's ready set and hash) are checked, once per call (and group), to hold their
type before the first write: a key edited into another type fails the call with WRONGTYPE, nothing
written (the client raises SpoiledKeyError naming it).
A job record of another type than a hash (edited by hand) is no job, as in every script: an id or
idempotency key naming it finds no job, and a job given its id replaces it.
Every job is checked before the first write (id characters, priority in [-1000, 1000], delay and
idempotency ttl integers in range, cost an integer >= 0); one bad job refuses the whole batch.
Generated ids come from the meta `id` counter, floored by Redis time (common.lua `reserve`), so an id
is never handed out twice, across obliterate and failovers included.
Returns: 2 entries per job: id, status (1 created, 0 existing job with the same name and data)
         or {-4, id} when any id or key is taken by a job with other name or data (nothing written)
         or {-6, position, reason} when job `position` (0 = the batch) is invalid (nothing written).
Codes: 0 OK, -4 CONFLICT, -6 INVALID_INPUT
Events: added (id, name)
]]
--@include common

local meta, ready, delayed, events, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, maxlen, count = ARGV[1], ARGV[2], int_in(ARGV[3], 0, 10000)
if not count or prefix == '' then return {-6, 0, 'batch arguments'} end

local jobs = {}
local grouped = nil  -- the groups this batch's ready jobs join (nil for none: no cost for plain adds)
local a = 4
for i = 1, count do
  local kind = ARGV[a]
  if (kind == 'r' and i == 1) or (kind ~= 'p' and kind ~= 'r' and kind ~= 'f') then
    return {-6, i, 'job ' .. i .. ': unknown form'}
  end
  if ARGV[a] == 'p' then
    jobs[i] = {id = '', ikey = '', name = ARGV[a + 1], data = ARGV[a + 2], opts = '', prio = 0, delay = 0,
               group = '', cost = '', plain = true}
    a = a + 3
  elseif ARGV[a] == 'r' then
    local p = jobs[i - 1]
    jobs[i] = {id = '', ikey = '', name = ARGV[a + 1], data = ARGV[a + 2], opts = p.opts, prio = p.prio,
               delay = p.delay, group = p.group, cost = p.cost, plain = p.plain}
    a = a + 3
  else
    jobs[i] = {id = ARGV[a + 1], ikey = ARGV[a + 2], ittl = ARGV[a + 3], name = ARGV[a + 4], data = ARGV[a + 5],
               opts = ARGV[a + 6], prio = tonumber(ARGV[a + 7]), delay = tonumber(ARGV[a + 8]),
               group = ARGV[a + 9], cost = ARGV[a + 10]}
    a = a + 11
    local j = jobs[i]
    if not j.id or not string.find(j.id, '^[%w%._:@/%+=%-]*$') then
      return {-6, i, 'job ' .. i .. ': invalid id'}
    end
    if not j.prio or not int_in(j.prio, -1000, 1000) or not j.delay or not int_in(j.delay, 0, MAX_MS)
        or (j.ikey ~= '' and not int_in(j.ittl, 1, MAX_MS)) or (j.cost ~= '' and not int_in(j.cost, 0, 1e12)) then
      return {-6, i, 'job ' .. i .. ': an option is out of range'}
    end
    if j.group ~= '' and j.delay == 0 then  -- ('r' jobs: the same group)
      grouped = grouped or {}
      grouped[j.group] = true
    end
  end
  if not jobs[i].name or jobs[i].name == '' or not jobs[i].data then
    return {-6, i, 'job ' .. i .. ': missing name or data'}
  end
end
if a - 1 ~= #ARGV then return {-6, 0, 'batch arguments'} end
-- The queue's keys an add writes, each checked once per call before the first write (common.lua must_be).
must_be(meta, 'hash')
must_be(ready, 'zset')
must_be(delayed, 'zset')
must_be(events, 'stream')
if grouped then
  local seen = {}
  for g in pairs(grouped) do group_keys_must_be(prefix, g, seen) end
end

-- Pass 1: find jobs that already exist (by id or idempotency key) and refuse conflicts.
local existing = {}
for i = 1, count do
  local j = jobs[i]
  local found = nil
  if j.ikey ~= '' then
    found = idem_owner(prefix .. 'idem:' .. j.ikey)  -- (another type names no job)
  end
  if not found and j.id ~= '' then
    found = j.id
  end
  if found then
    local f = job_call('HMGET', prefix .. 'job:' .. found, 'name', 'data')  -- (another type: no job)
    if f and f[1] then
      if f[1] ~= j.name or f[2] ~= j.data then
        return {-4, found}
      end
      existing[i] = found
    end
  end
end

local now = now_ms()
local created = num(now)
-- The id counter and the events mode in one read (reserve and emit would each read one).
local m = redis.call('HMGET', meta, 'id', 'events')
COUNTERS[meta .. ' id'] = tonumber(m[1]) or 0
EVENTS_MODE = m[2] or ''
local out = {}
local woke = false
local plain_scores, plain_prios = {}, {}
local next_id, last_id = 1, 0
for i = 1, count do
  local j = jobs[i]
  -- A key or id repeated inside this batch points at the job created earlier in this loop
  -- (the caller checked that the repeats carry the same name and data).
  -- A record of another type (edited by hand) is no job: it names no duplicate, and a job given its
  -- id is written in its place (the record and what hung on it go first, as a removed job's do).
  local dup = existing[i]
  local spoiled = false
  if not dup and j.ikey ~= '' then
    dup = idem_owner(prefix .. 'idem:' .. j.ikey)
    if dup and key_type(prefix .. 'job:' .. dup) ~= 'hash' then dup = nil end
  end
  if not dup and j.id ~= '' then
    local t = key_type(prefix .. 'job:' .. j.id)
    if t == 'hash' then dup = j.id else spoiled = t ~= 'none' end
  end
  if dup then
    out[#out + 1] = dup
    out[#out + 1] = 0
  else
    local id = j.id
    if id == '' then
      -- Generated ids are reserved in one block for the rest of the batch (gaps are harmless).
      if next_id > last_id then
        last_id = reserve(meta, 'id', count - i + 1)
        next_id = last_id - (count - i)
      end
      id = num(next_id)
      next_id = next_id + 1
    end
    local jk = prefix .. 'job:' .. id
    if spoiled then redis.call('DEL', jk, prefix .. 'log:' .. id, prefix .. 'out:' .. id) end
    if j.plain then
      redis.call('HSET', jk, 'name', j.name, 'data', j.data, 'ts', created, 'state', 'waiting')
      plain_scores[#plain_scores + 1] = id
      woke = true
    else
      local fields = {'name', j.name, 'data', j.data, 'ts', created}
      if j.opts ~= '' then
        fields[#fields + 1] = 'opts'; fields[#fields + 1] = j.opts
      end
      if j.prio ~= 0 then
        fields[#fields + 1] = 'prio'; fields[#fields + 1] = j.prio
      end
      if j.group ~= '' then
        fields[#fields + 1] = 'group'; fields[#fields + 1] = j.group
      end
      if j.cost ~= '' then
        fields[#fields + 1] = 'cost'; fields[#fields + 1] = j.cost
      end
      if j.ikey ~= '' then
        fields[#fields + 1] = 'idem'; fields[#fields + 1] = j.ikey
        redis.call('SET', prefix .. 'idem:' .. j.ikey, id, 'PX', j.ittl)
      end
      if j.delay > 0 then
        fields[#fields + 1] = 'state'; fields[#fields + 1] = 'delayed'
        redis.call('HSET', jk, unpack(fields))
        push_delayed(delayed, wake_key, id, now + j.delay)
      else
        fields[#fields + 1] = 'state'; fields[#fields + 1] = 'waiting'
        redis.call('HSET', jk, unpack(fields))
        if j.group ~= '' then
          group_push(meta, ready, j.group, ready_score(meta, j.prio), id)
        else
          plain_scores[#plain_scores + 1] = id
          plain_prios[#plain_scores] = j.prio
        end
        woke = true
      end
    end
    emit(events, maxlen, 'ev', 'added', 'id', id, 'name', j.name)
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
-- Ungrouped ready jobs enter `ready` together, in order, with one block of sequence numbers
-- (score as in ready_score: higher priority first, then arrival).
if #plain_scores > 0 then
  local n = #plain_scores
  local seq = incr(meta, 'seq', n) - n
  local zargs = {}
  for i = 1, n do
    zargs[#zargs + 1] = num((1000 - (plain_prios[i] or 0)) * 2199023255552 + seq + i)
    zargs[#zargs + 1] = plain_scores[i]
    if #zargs >= 1000 then
      redis.call('ZADD', ready, unpack(zargs))
      zargs = {}
    end
  end
  if #zargs > 0 then redis.call('ZADD', ready, unpack(zargs)) end
end
if woke then wake(wake_key) end
return out
