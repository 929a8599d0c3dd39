--@include capshare
--@include gcra

-- Limits, evaluated inside the claim: GCRA rate and cost limiters, concurrency caps, upstream
-- backpressure blocks and fair (weighted) scheduling across groups. Needs common.lua (groups.lua)
-- and claim.lua's lease/next_due_in. See docs/limits.md for the model and the keys.
-- <p>limits hash: queue limits conc, rate_t, rate_cap, cost_t, cost_cap (t = ms per unit, cap =
-- units that may start at once); group defaults g_conc, g_rate_t, g_rate_cap, g_cost_t, g_cost_cap;
-- state rtat/ctat (limiter TATs, ms), blk (claiming blocked until, ms), vt (virtual time: the pass
-- last served), upass (pass of the ungrouped jobs, which share the rotation as one group); cfg (JSON).

-- Rate limits held by a window log give gcra (gcra.lua) a slack of CATCH_UP_MS: the log still holds
-- every window of per_s.
local CATCH_UP_MS = 100
-- While jobs wait behind the queue's rate limiter (a claim was cut short by it and jobs stayed
-- ready: field rwait), a late claim is the claimers' lateness (a busy machine), not idle time: up to
-- STALL_CATCH_UP_MS of it (at most one window) is caught up. The window log still bounds every
-- window of per_s, so the catch-up can never exceed limit + burst there.
local STALL_CATCH_UP_MS = 1000

-- Sliding-window log of a rate limiter (fields rate_n = limit + burst, rate_w = window ms): the
-- start times of the last rate_n jobs, newest first. A start is allowed only while fewer than rate_n
-- started in the window before it, so no window of per_s seconds ever sees more than limit + burst
-- starts, whatever the catch-up above does. Returns nil when allowed, else the ms time it would be.
local function window_at(logkey, n, w, now)
  if not n then return nil end
  local old = tonumber(redis.call('LINDEX', logkey, n - 1))
  if old and old + w > now then return old + w end
  return nil
end

local function window_note(logkey, n, w, now, count)
  if not n or count <= 0 then return end
  local args = {}
  for i = 1, math.min(count, n) do args[i] = num(now) end
  redis.call('LPUSH', logkey, unpack(args))
  redis.call('LTRIM', logkey, 0, n - 1)
  redis.call('PEXPIRE', logkey, math.ceil(w) + 1000)
end

local function load_group(p, g, L)
  group_keys_sane(p, g)
  local G = load_fields(p .. 'gs:' .. g, {'conc', 'rate_t', 'rate_cap', 'rate_n', 'rate_w', 'cost_t',
    'cost_cap', 'w', 'ga', 'rtat', 'ctat', 'blk', 'pass'})
  G.name = g
  G.log = p .. 'grl:' .. g
  if not G.conc then G.conc = L.g_conc end
  if not G.rate_t then G.rate_t, G.rate_cap, G.rate_n, G.rate_w = L.g_rate_t, L.g_rate_cap, L.g_rate_n, L.g_rate_w end
  if not G.cost_t then G.cost_t, G.cost_cap = L.g_cost_t, L.g_cost_cap end
  G.w = G.w or 1
  G.ga = G.ga or 0
  if G.ga < 0 then G.ga = 0 end  -- jobs leased before the group was counted (upgrade) ended since
  return G
end

local function save_group(p, G)
  local args = {'ga', G.ga, 'pass', pass_str(G.pass)}
  if G.rtat then args[#args + 1] = 'rtat'; args[#args + 1] = fmt(G.rtat) end
  if G.ctat then args[#args + 1] = 'ctat'; args[#args + 1] = fmt(G.ctat) end
  redis.call('HSET', p .. 'gs:' .. G.name, unpack(args))
end

-- Take a group out of the rotation until `at` ms (limiter or block) or until a slot frees (cap).
local function park(p, G, pass, at)
  redis.call('ZREM', p .. 'gq', G.name)
  if at then
    redis.call('ZADD', p .. 'gpark', num(math.ceil(at)), G.name)
  else
    redis.call('SADD', p .. 'gcap', G.name)
  end
  G.pass = pass
end

local function unpark_due(p, meta, now)
  local due = redis.call('ZRANGEBYSCORE', p .. 'gpark', '-inf', now, 'LIMIT', 0, 100)
  if #due == 0 then return end
  redis.call('ZREM', p .. 'gpark', unpack(due))
  for i = 1, #due do
    group_keys_sane(p, due[i])
    if redis.call('ZCARD', p .. 'gr:' .. due[i]) > 0 then group_join(p, meta, due[i]) end
  end
end

-- Queue-level limiters for one job of cost c: (rtat, ctat, nil) if it may start, else (.., at).
-- The caller notes the start in the window log (window_note) once every limiter admitted it.
local function queue_admit(L, rtat, ctat, c, now)
  local at
  if L.rate_t then
    at = window_at(L.log, L.rate_n, L.rate_w, now)
    if at then return nil, nil, at end
    rtat, at = gcra(rtat, L.rate_t, L.rate_cap, 1, now, L.slack)
    if at then return nil, nil, at end
  end
  if L.cost_t then
    ctat, at = gcra(ctat, L.cost_t, L.cost_cap, c, now)
    if at then return nil, nil, at end
  end
  return rtat, ctat, nil
end

local function next_wake_in(k, p, now, reopen)
  local d = next_due_in(k.delayed, now)
  local first = redis.call('ZRANGE', p .. 'gpark', 0, 0, 'WITHSCORES')
  if first[2] and (not reopen or tonumber(first[2]) < reopen) then reopen = tonumber(first[2]) end
  if reopen then
    local r = math.ceil(reopen - now)
    if r < 1 then r = 1 end
    if d < 0 or r < d then d = r end
  end
  return d
end

-- Nothing configured, blocked or grouped any more: give the queue its plain claim path back.
local function maybe_clear_flag(k, p, L, now)
  if L.conc or L.rate_t or L.cost_t or L.g_conc or L.g_rate_t or L.g_cost_t then return end
  if L.blk and L.blk > now then return end
  if redis.call('ZCARD', p .. 'gq') > 0 or redis.call('ZCARD', p .. 'gpark') > 0
     or redis.call('SCARD', p .. 'gcap') > 0 then return end
  redis.call('HDEL', k.meta, 'lim')
end

-- The ungrouped jobs' turn. S is the claim's working state (see claim_limited).
local function take_ungrouped(k, p, L, S, now)
  local id = redis.call('ZRANGE', k.ready, 0, 0)[1]
  -- (a record gone, or edited into another type, is no waiting job: a stale entry)
  local f = job_call('HMGET', p .. 'job:' .. id, 'state', 'cost') or {}
  S.nready = S.nready - 1
  if f[1] ~= 'waiting' then
    redis.call('ZREM', k.ready, id)  -- stale entry
    return true
  end
  local c = tonumber(f[2]) or 1
  local nr, nc, at = queue_admit(L, S.rtat, S.ctat, c, now)
  if at then
    S.nready = S.nready + 1
    S.limited, S.reopen = true, at
    return false
  end
  S.rtat, S.ctat = nr, nc
  if L.rate_t then window_note(L.log, L.rate_n, L.rate_w, now, 1) end
  redis.call('ZREM', k.ready, id)
  local up = math.max(S.upass, S.vt)
  S.vt, S.upass = up, up + 1
  S.ids[#S.ids + 1] = id
  if L.cost_t then S.charged[id] = c end
  return true
end

-- Only ungrouped jobs and no per-job costs: check the rate limiter in Lua, then pop in one call.
local function take_ungrouped_batch(k, L, S, room, now)
  local n = math.min(room, S.nready)
  local ok = 0
  while ok < n do
    if L.rate_t then
      local at = window_at(L.log, L.rate_n, L.rate_w, now)
      local nr
      if not at then nr, at = gcra(S.rtat, L.rate_t, L.rate_cap, 1, now, L.slack) end
      if at then
        S.limited, S.reopen = true, at
        break
      end
      S.rtat = nr
      window_note(L.log, L.rate_n, L.rate_w, now, 1)
    end
    ok = ok + 1
  end
  if ok == 0 then return end
  local popped = redis.call('ZPOPMIN', k.ready, ok)
  for i = 1, #popped, 2 do S.ids[#S.ids + 1] = popped[i] end
  S.nready = S.nready - ok
  local up = math.max(S.upass, S.vt)
  S.vt, S.upass = up + ok - 1, up + ok
end

-- The turn of group g (pass gpass, at the head of the rotation). False when a queue limit stops
-- the claim; a group that cannot run now is parked and the rotation moves on.
local function take_grouped(k, p, L, S, g, gpass, now)
  local G = S.groups[g]
  if not G then
    G = load_group(p, g, L)
    S.groups[g] = G
    S.touched[#S.touched + 1] = G
  end
  G.pass = gpass
  if G.blk and G.blk > now then
    park(p, G, gpass, G.blk)
    return true
  end
  if G.conc and G.ga >= G.conc then
    park(p, G, gpass, nil)
    return true
  end
  local gr = p .. 'gr:' .. g
  local id = redis.call('ZRANGE', gr, 0, 0)[1]
  if not id then
    redis.call('ZREM', p .. 'gq', g)  -- emptied by cancel/remove; it rejoins with its next job
    return true
  end
  local f = job_call('HMGET', p .. 'job:' .. id, 'state', 'cost') or {}
  if f[1] ~= 'waiting' then
    redis.call('ZREM', gr, id)
    S.taken_grouped = S.taken_grouped + 1
    return true
  end
  local c = tonumber(f[2]) or 1
  local gr_tat, gc_tat, at = G.rtat, G.ctat, nil
  if G.rate_t then at = window_at(G.log, G.rate_n, G.rate_w, now) end
  if G.rate_t and not at then gr_tat, at = gcra(G.rtat, G.rate_t, G.rate_cap, 1, now, G.rate_n and CATCH_UP_MS) end
  if not at and G.cost_t then gc_tat, at = gcra(G.ctat, G.cost_t, G.cost_cap, c, now) end
  if at then
    park(p, G, gpass, at)
    return true
  end
  local nr, nc, qat = queue_admit(L, S.rtat, S.ctat, c, now)
  if qat then
    S.limited, S.reopen = true, qat
    return false
  end
  S.rtat, S.ctat, G.rtat, G.ctat = nr, nc, gr_tat, gc_tat
  if L.rate_t then window_note(L.log, L.rate_n, L.rate_w, now, 1) end
  if G.rate_t then window_note(G.log, G.rate_n, G.rate_w, now, 1) end
  G.ga = G.ga + 1
  redis.call('ZREM', gr, id)
  S.taken_grouped = S.taken_grouped + 1
  S.vt = gpass
  G.pass = gpass + 1 / G.w
  if redis.call('ZCARD', gr) > 0 then
    redis.call('ZADD', p .. 'gq', pass_str(G.pass), g)
  else
    redis.call('ZREM', p .. 'gq', g)
  end
  S.ids[#S.ids + 1] = id
  if L.cost_t or G.cost_t then S.charged[id] = c end
  return true
end

local function save_state(k, p, lk, S)
  local qargs = {'vt', pass_str(S.vt), 'upass', pass_str(S.upass)}
  if S.rtat then qargs[#qargs + 1] = 'rtat'; qargs[#qargs + 1] = fmt(S.rtat) end
  if S.ctat then qargs[#qargs + 1] = 'ctat'; qargs[#qargs + 1] = fmt(S.ctat) end
  redis.call('HSET', lk, unpack(qargs))
  for i = 1, #S.touched do save_group(p, S.touched[i]) end
  if S.taken_grouped > 0 then incr(k.meta, 'gwait', -S.taken_grouped) end
end

local function claim_limited(k, p, worker, lease_ms, want, now, maxlen, out)
  local lk, gq = p .. 'limits', p .. 'gq'
  local L = load_fields(lk, {'conc', 'rate_t', 'rate_cap', 'rate_n', 'rate_w', 'cost_t', 'cost_cap', 'g_conc',
    'g_rate_t', 'g_rate_cap', 'g_rate_n', 'g_rate_w', 'g_cost_t', 'g_cost_cap', 'rtat', 'ctat', 'blk', 'vt',
    'upass', 'rwait'})
  L.log = p .. 'rlog'
  L.slack = L.rate_n and (L.rwait and math.min(STALL_CATCH_UP_MS, L.rate_w) or CATCH_UP_MS)
  unpark_due(p, k.meta, now)
  local S = {nready = redis.call('ZCARD', k.ready), vt = L.vt or 0, upass = L.upass or 0, rtat = L.rtat,
             ctat = L.ctat, groups = {}, touched = {}, ids = {}, charged = {}, limited = false,
             reopen = nil, taken_grouped = 0}
  local room = want
  if L.blk and L.blk > now then
    room, S.limited, S.reopen = 0, true, L.blk
  elseif L.conc then
    S.capfree = L.conc - redis.call('ZCARD', k.active)
    local r = cap_room(p, worker, L.conc, S.capfree, room, now)
    if r < room then room, S.limited = r, true end
  end
  if room > 0 and S.nready > 0 and not L.cost_t and redis.call('ZCARD', gq) == 0 then
    take_ungrouped_batch(k, L, S, room, now)
  else
    while #S.ids < room do
      local top = redis.call('ZRANGE', gq, 0, 0, 'WITHSCORES')
      local g, gpass = top[1], tonumber(top[2])
      local go
      if S.nready > 0 and (not g or math.max(S.upass, S.vt) <= gpass) then
        go = take_ungrouped(k, p, L, S, now)
      elseif g then
        go = take_grouped(k, p, L, S, g, gpass, now)
      else
        go = false
      end
      if not go then break end
    end
  end
  save_state(k, p, lk, S)
  local n, got = lease(k, p, worker, lease_ms, now, maxlen, S.ids, 1, 1, S.charged, out)
  local more = S.nready > 0 or redis.call('ZCARD', gq) > 0
  if L.rate_n then  -- jobs left waiting behind a limit: lateness from here on is not idle time
    local waiting = more and S.limited and S.reopen ~= nil
    if waiting and not L.rwait then redis.call('HSET', lk, 'rwait', 1)
    elseif not more and L.rwait then redis.call('HDEL', lk, 'rwait') end
  end
  -- (only the jobs leased count for the worker: an id without a record to lease was only dropped)
  local poll = S.capfree and cap_after(k, p, worker, want, got, S.capfree, more, now)
  -- Chain the wake-up only when this worker's appetite, not a limit, ended the claim.
  if more and not S.limited and (n > 0 or want <= 0) and #S.ids >= want then wake(k.wake) end
  if #S.ids < want then
    out[1] = next_wake_in(k, p, now, S.reopen)
    if poll and (out[1] < 0 or out[1] > CAP_WAIT_POLL_MS) then out[1] = CAP_WAIT_POLL_MS end
    if not more and not S.limited then maybe_clear_flag(k, p, L, now) end
  end
  return out
end

-- Outcome side ------------------------------------------------------------------------------

local function shift_tat(tat, t, delta, now)
  if not tat or tat < now then tat = now end
  tat = tat + delta * t
  if tat < now then tat = now end
  return fmt(tat)
end

-- A finished job reported its real cost: correct the cost limiters by (reported - charged) units.
local function cost_correct(p, g, delta, now)
  if delta == 0 then return end
  local lk = p .. 'limits'
  local q = redis.call('HMGET', lk, 'cost_t', 'ctat', 'g_cost_t')
  if q[1] then
    redis.call('HSET', lk, 'ctat', shift_tat(tonumber(q[2]), tonumber(q[1]), delta, now))
  end
  if g then
    group_keys_sane(p, g)
    local gk = p .. 'gs:' .. g
    local v = redis.call('HMGET', gk, 'cost_t', 'ctat')
    local t = tonumber(v[1]) or tonumber(q[3])
    if t then redis.call('HSET', gk, 'ctat', shift_tat(tonumber(v[2]), t, delta, now)) end
  end
end

-- Upstream backpressure: stop claiming for the queue, or for group g, until `untilms`.
local function block_claims(p, meta, g, untilms)
  if g then
    group_keys_sane(p, g)
    local gk = p .. 'gs:' .. g
    local cur = tonumber(redis.call('HGET', gk, 'blk'))
    if not cur or untilms > cur then redis.call('HSET', gk, 'blk', num(untilms)) end
    local pass = redis.call('ZSCORE', p .. 'gq', g)
    if pass then
      redis.call('HSET', gk, 'pass', pass)
      redis.call('ZREM', p .. 'gq', g)
    end
    local parked = tonumber(redis.call('ZSCORE', p .. 'gpark', g))
    if not parked or parked < untilms then redis.call('ZADD', p .. 'gpark', num(untilms), g) end
    redis.call('SADD', p .. 'groups', g)
  else
    local lk = p .. 'limits'
    local cur = tonumber(redis.call('HGET', lk, 'blk'))
    if not cur or untilms > cur then redis.call('HSET', lk, 'blk', num(untilms)) end
  end
  redis.call('HSET', meta, 'lim', '1')
end
