-- Group helpers (fair scheduling), flattened into common.lua so every script that makes a job ready
-- routes grouped jobs. Needs num/ready_score/wake from common.lua.
-- Keys derive from the queue prefix (same hash tag), which every `ready` key ends: '<prefix>ready'.
--   <p>gr:<g>  zset  ready jobs of group g (same score as `ready`: priority, then arrival)
--   <p>gs:<g>  hash  group g: overrides (conc, rate_t, rate_cap, cost_t, cost_cap, w, cfg) and
--                    state (ga active count, rtat/ctat limiter TATs, blk blocked-until ms, pass)
--   <p>gq      zset  rotation: groups with ready jobs that may be served, scored by virtual pass
--   <p>gpark   zset  groups held back until a time (rate/cost limit or upstream backpressure)
--   <p>gcap    set   groups at their concurrency cap (a finishing job of the group releases them)
--   <p>groups  set   every group seen (listing, obliterate)
-- meta fields: lim = '1' while the claim must take the limits path; gwait = grouped waiting jobs.

-- Passes keep full precision (a plain number argument would be cut to 14 digits).
local function pass_str(x)
  return string.format('%.17g', x)
end

local function qprefix(ready)
  return string.sub(ready, 1, -6)
end

-- A group's own keys (gr:<g> its ready jobs, gs:<g> its overrides and state) that a hand edit gave
-- another Redis type list no job and hold nothing readable: they are deleted, once per group and
-- call, before a script uses them, so one tenant's spoiled key never fails the trips of the whole
-- queue (a trip failing on it would be sent again and fail again). Adds refuse them instead
-- (group_keys_must_be), so an enqueue says which key is wrong.
local SANE_GROUPS = {}
local function group_keys_sane(p, g)
  if SANE_GROUPS[g] then return end
  SANE_GROUPS[g] = true
  local gr, gs = p .. 'gr:' .. g, p .. 'gs:' .. g
  local t = key_type(gr)
  if t ~= 'zset' and t ~= 'none' then redis.call('DEL', gr) end
  t = key_type(gs)
  if t ~= 'hash' and t ~= 'none' then redis.call('DEL', gs) end
end

-- A group with ready jobs enters the rotation unless it is parked; it keeps its own pass but never
-- starts behind the virtual time (the pass last served), so a returning group gets no credit.
local function group_join(p, meta, g)
  group_keys_sane(p, g)
  if redis.call('ZSCORE', p .. 'gpark', g) or redis.call('SISMEMBER', p .. 'gcap', g) == 1 then return end
  if redis.call('ZSCORE', p .. 'gq', g) then return end
  local pass = tonumber(redis.call('HGET', p .. 'gs:' .. g, 'pass')) or 0
  local vt = tonumber(redis.call('HGET', p .. 'limits', 'vt')) or 0
  if vt > pass then pass = vt end
  redis.call('ZADD', p .. 'gq', pass_str(pass), g)
  redis.call('HSET', meta, 'lim', '1')
end

-- The keys a ready job of group g meets (group_push, group_join), checked before a script's first
-- write (common.lua must_be): the queue's ones once per call, each group's once (`seen` remembers
-- them), so an add or flow pays nothing per job.
local function group_keys_must_be(p, g, seen)
  if not seen[1] then
    seen[1] = true
    must_be(p .. 'groups', 'set')
    must_be(p .. 'gcap', 'set')
    must_be(p .. 'gq', 'zset')
    must_be(p .. 'gpark', 'zset')
    must_be(p .. 'limits', 'hash')
  end
  if seen[g] then return end
  seen[g] = true
  must_be(p .. 'gr:' .. g, 'zset')
  must_be(p .. 'gs:' .. g, 'hash')
  SANE_GROUPS[g] = true
end

local function group_push(meta, ready, g, score, id)
  local p = qprefix(ready)
  group_keys_sane(p, g)
  local gr = p .. 'gr:' .. g
  redis.call('ZADD', gr, score, id)
  incr(meta, 'gwait', 1)
  if redis.call('ZCARD', gr) == 1 then
    redis.call('SADD', p .. 'groups', g)
    group_join(p, meta, g)
  end
end

-- A job held for a handler (finish-10.lua, kind H) leaves <p>hold:<name> (cancel, remove, drain).
local function unhold_one(p, jk, id, name)
  local hk = p .. 'hold:' .. name
  if index_call('ZREM', hk, id) == 1 then
    incr(p .. 'meta', 'hwait', -1)
    if redis.call('EXISTS', hk) == 0 then index_call('SREM', p .. 'holds', name) end
  end
  redis.call('HDEL', jk, 'held')
end

-- Take a waiting job out of whichever ready set holds it (cancel, remove).
local function remove_waiting(ready, jk, id)
  local f = redis.call('HMGET', jk, 'group', 'held')
  local g = f[1]
  local p = qprefix(ready)
  if f[2] then
    unhold_one(p, jk, id, f[2])
    return
  end
  if not g then
    redis.call('ZREM', ready, id)
    return
  end
  group_keys_sane(p, g)
  if redis.call('ZREM', p .. 'gr:' .. g, id) == 1 then
    incr(p .. 'meta', 'gwait', -1)
  end
end

-- A job of group g left `active`: one slot of the group's cap is free again.
local function group_release(p, g)
  group_keys_sane(p, g)
  incr(p .. 'gs:' .. g, 'ga', -1)
  if redis.call('SREM', p .. 'gcap', g) == 1 and redis.call('ZCARD', p .. 'gr:' .. g) > 0 then
    group_join(p, p .. 'meta', g)
  end
end
