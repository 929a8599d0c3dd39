--[[ limiter-settle-5: what happened to a reservation or to the jobs holding a named limiter.
KEYS: 1 cfg, 2 st, 3 exp, 4 info, 5 use (see limiter.lua)
ARGV: 1 op, 2 reservation id or '', 3 ttl ms (1..1 day), then per op:
  trim     4 keep: the reservation keeps `keep` jobs (another limiter granted fewer); the rest is
           refunded (keep 0 drops it)
  confirm  4.. hold ids (the lease tokens of the jobs claimed under the reservation): each becomes a
           hold of one slot expiring after the ttl; the jobs not claimed are refunded. A resend
           (reservation gone, holds present) is OK and writes nothing.
  extend   4.. hold ids: push their expiry to now + ttl (the worker's heartbeat)
  release  4.. 5 fields per job: hold id, tokens in, tokens out ('' = not reported: the estimate
           stands in the limiter, the usage totals count nothing), signal ('ok' | '429' | 'timeout' | 'err'), retry-after ms (0 = none).
           The slot is freed; the token limiters are corrected by (reported - estimated); a 429 or
           a timeout lowers the adaptive limit multiplicatively (once per congestion: jobs started
           before the last decrease do not lower it again), a 429 also caps it at the jobs still
           holding slots; a retry-after pauses admission; a run of successes while every slot of the limit is held raises it
           additively.
Every argument is checked before the first write.
An entry that cannot be read (edited by hand) named by a confirm or a release is dropped and the
slots held are counted again from the readable entries (limiter.lua `drop_unreadable`).
Returns: one code per id (0 OK, -1 NOT_FOUND: the hold was released already, expired or unreadable) for
         confirm/extend/release; {0} for trim; {-1, 0, 'unknown limiter'}; {-6, position, reason}.
Codes: 0 OK, -1 NOT_FOUND, -6 INVALID_INPUT
]]
--@include common
--@include limiter

local K = lkeys()
local op, rid, ttl = ARGV[1], ARGV[2], int_in(ARGV[3], 1, 86400000)
if not ttl or #rid > 200 then return {-6, 0, 'settle arguments'} end
local nargs = #ARGV - 3
if op == 'trim' then
  if nargs ~= 1 or not int_in(ARGV[4], 0, 1000) or rid == '' then return {-6, 0, 'trim arguments'} end
elseif op == 'confirm' or op == 'extend' then
  if nargs > 1000 or (op == 'confirm' and rid == '') then return {-6, 0, op .. ' arguments'} end
  for i = 4, #ARGV do
    if ARGV[i] == '' or #ARGV[i] > 200 then return {-6, i - 3, 'hold id'} end
  end
elseif op == 'release' then
  if nargs % 5 ~= 0 or nargs > 5000 then return {-6, 0, 'release arguments'} end
  local SIGNALS = {ok = true, ['429'] = true, timeout = true, err = true}
  for i = 4, #ARGV, 5 do
    local pos = (i - 4) / 5 + 1
    if ARGV[i] == '' or #ARGV[i] > 200 or not SIGNALS[ARGV[i + 3]] or not int_in(ARGV[i + 4], 0, 86400000) then
      return {-6, pos, 'release of hold ' .. ARGV[i]}
    end
    for j = 1, 2 do
      local v = ARGV[i + j]
      if v ~= '' and not int_in(v, 0, 1e9) then return {-6, pos, 'usage of hold ' .. ARGV[i]} end
    end
  end
else
  return {-6, 0, 'unknown op'}
end
if redis.call('EXISTS', K.cfg) == 0 then return {-1, 0, 'unknown limiter'} end

local now = now_ms()
local C, S = load_all(K)
sweep(K, C, S, now)
local out = {}

if op == 'trim' then
  local keep = tonumber(ARGV[4])
  local v = redis.call('HGET', K.info, rid)
  if v then
    local kind, n, ein, eout, start = parse_info(v)
    if kind == 'P' and keep < n then
      for _, d in ipairs(DIMS) do lshift(S, C, d, -(n - keep) * units(d, ein, eout), now) end
      unlog(K, n - keep, start)
      S.held = math.max(0, (S.held or 0) - (n - keep))
      if keep == 0 then
        redis.call('HDEL', K.info, rid)
        redis.call('ZREM', K.exp, rid)
      else
        redis.call('HSET', K.info, rid, 'P|' .. keep .. '|' .. ein .. '|' .. eout .. '|' .. start)
      end
    end
  end
  out[1] = 0
elseif op == 'confirm' then
  local v = redis.call('HGET', K.info, rid)
  if v and parse_info(v) == 'X' then  -- unreadable: its slots come back, no job holds one under it
    drop_unreadable(K, S, rid)
    for i = 1, nargs do out[i] = -1 end
  elseif v then
    local kind, n, ein, eout, start = parse_info(v)
    local m = math.min(n, nargs)
    for _, d in ipairs(DIMS) do lshift(S, C, d, -(n - m) * units(d, ein, eout), now) end
    unlog(K, n - m, start)
    S.held = math.max(0, (S.held or 0) - n + m)
    redis.call('HDEL', K.info, rid)
    redis.call('ZREM', K.exp, rid)
    for i = 1, m do
      local id = ARGV[3 + i]
      redis.call('HSET', K.info, id, 'H|1|' .. ein .. '|' .. eout .. '|' .. start)
      redis.call('ZADD', K.exp, num(now + ttl), id)
      out[i] = 0
    end
    for i = m + 1, nargs do out[i] = -1 end
  else
    for i = 4, #ARGV do out[#out + 1] = redis.call('HEXISTS', K.info, ARGV[i]) == 1 and 0 or -1 end
  end
elseif op == 'extend' then
  for i = 4, #ARGV do
    out[#out + 1] = redis.call('ZADD', K.exp, 'XX', 'CH', num(now + ttl), ARGV[i]) == 1 and 0 or -1
    if out[#out] == -1 and redis.call('ZSCORE', K.exp, ARGV[i]) then out[#out] = 0 end
  end
else
  local minute = math.floor(now / 60000)
  for i = 4, #ARGV, 5 do
    local id, uin, uout, signal, after = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
    local v = redis.call('HGET', K.info, id)
    local kind, _, ein, eout, start
    if v then kind, _, ein, eout, start = parse_info(v) end
    if kind == 'X' then  -- unreadable: its holder is done with it, so its slot comes back
      drop_unreadable(K, S, id)
      out[#out + 1] = -1
    elseif kind ~= 'H' then
      out[#out + 1] = -1
    else
      out[#out + 1] = 0
      local rin, rout = tonumber(uin) or ein, tonumber(uout) or eout
      lshift(S, C, 'tin', rin - ein, now)
      lshift(S, C, 'tout', rout - eout, now)
      lshift(S, C, 'tok', rin + rout - ein - eout, now)
      S.held = math.max(0, (S.held or 0) - 1)
      redis.call('HDEL', K.info, id)
      redis.call('ZREM', K.exp, id)
      -- Usage counts only what was reported; an unreported run keeps its estimate in the limiter.
      incr(K.use, minute .. ':r', 1)
      if uin ~= '' then
        incr(K.use, minute .. ':i', rin)
        incr(K.st, 'used_in', rin)
      end
      if uout ~= '' then
        incr(K.use, minute .. ':o', rout)
        incr(K.st, 'used_out', rout)
      end
      if signal == '429' or signal == 'timeout' then
        incr(K.use, minute .. (signal == '429' and ':x' or ':t'), 1)
        incr(K.st, 'n_' .. signal, 1)
        if after > 0 and (not S.blk or now + after > S.blk) then S.blk = now + after end
        if C.a_max then
          local cur = S.climit or C.a_max
          -- (a call that started in the millisecond of the last decrease counts as started before
          -- it: it may have been in flight when that decrease was made, and must not halve again)
          if not S.dec_at or start > (tonumber(S.dec_at) or 0) then
            cur, S.succ, S.dec_at = cur * C.a_dec, 0, now
          end
          -- A 429 also says the provider serves no more than the calls still in flight: the limit
          -- drops to that count at once (a burst of 429s converges in one round, not one per decrease).
          if signal == '429' then cur = math.min(cur, math.max(S.held, 1)) end
          S.climit = math.max(C.a_min, cur)
        end
      else
        incr(K.st, 'n_' .. signal, 1)
        -- Only a success while the limit was in full use says the provider could take more: a
        -- fleet that runs fewer calls than the limit (no backlog, a slow machine) must not let
        -- the limit drift up with no evidence (TCP's rule for an application-limited sender).
        local cur = S.climit or C.a_max
        if signal == 'ok' and C.a_max and S.held + 1 >= math.floor(cur) then
          S.succ = (S.succ or 0) + 1
          if S.succ >= math.max(1, math.floor(cur * C.a_win)) then
            S.climit, S.succ = math.min(C.a_max, cur + C.a_inc), 0
          end
        end
      end
    end
  end
  -- Keep about an hour of per-minute counters.
  local oldest = tonumber(redis.call('HGET', K.st, 'use_min')) or minute
  local steps = 0
  while oldest < minute - 60 and steps < 120 do
    redis.call('HDEL', K.use, oldest .. ':r', oldest .. ':i', oldest .. ':o', oldest .. ':x', oldest .. ':t')
    oldest = oldest + 1
    steps = steps + 1
  end
  if oldest < minute - 60 then oldest = minute - 60 end
  redis.call('HSET', K.st, 'use_min', num(oldest))
end
save_state(K, S)
return out
