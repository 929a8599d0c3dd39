--[[ limiter-acquire-5: reserve room for up to `want` jobs in a named limiter, before claiming them.
KEYS: 1 cfg, 2 st, 3 exp, 4 info, 5 use (see limiter.lua)
ARGV: 1 reservation id, 2 want (0..1000), 3 estimated tokens in per job, 4 estimated tokens out per
      job (0..1e9 each), 5 reservation ttl ms (1..1 day)
Charges every dimension for each job it grants and holds that many concurrency slots, under one id
that expires after the ttl: the caller claims at most that many jobs, then confirms the ids of the
jobs it leased (limiter-settle-5.lua) or the reservation expires and is refunded whole. A resend of
the same reservation id returns the first answer and charges nothing more.
Returns: {granted, retry_in_ms (-1: wait for a slot to free), reason ('' | 'paused' | 'concurrency' |
         'rate')}; or {-1, 0, 'unknown limiter'} (NOT_FOUND); or {-6, 0, reason} (INVALID_INPUT).
Codes: 0 OK, -1 NOT_FOUND, -6 INVALID_INPUT
]]
--@include common
--@include limiter

local K = lkeys()
local rid = ARGV[1]
local want, ein, eout = int_in(ARGV[2], 0, 1000), int_in(ARGV[3], 0, 1e9), int_in(ARGV[4], 0, 1e9)
local ttl = int_in(ARGV[5], 1, 86400000)
if rid == '' or #rid > 200 or not (want and ein and eout and ttl) then return {-6, 0, 'acquire arguments'} end
if redis.call('EXISTS', K.cfg) == 0 then return {-1, 0, 'unknown limiter'} end
local now = now_ms()
local prev = redis.call('HGET', K.info, rid)
if prev then
  local _, n = parse_info(prev)
  return {n, 0, ''}
end
local C, S = load_all(K)
sweep(K, C, S, now)
local limit = conc_limit(C, S)
local held = S.held or 0
local granted, retry, reason = 0, -1, ''
local tats = {}
for _, d in ipairs(DIMS) do tats[d] = S[d .. '_tat'] end
while granted < want do
  if S.blk and S.blk > now then
    retry, reason = S.blk - now, 'paused'
    break
  end
  if limit and held + granted >= limit then
    reason = 'concurrency'
    local first = redis.call('ZRANGE', K.exp, 0, 0, 'WITHSCORES')
    if first[2] then retry = math.max(1, tonumber(first[2]) - now) end
    break
  end
  local at = nil
  if C.req_t and C.req_n then
    local old = tonumber(redis.call('LINDEX', K.cfg .. ':log', C.req_n - 1 - granted))
    if old and old + C.req_w > now then at = old + C.req_w end
  end
  local new = {}
  if not at then
    for _, d in ipairs(DIMS) do
      local t = C[d .. '_t']
      if t then
        local slack = (d == 'req' and C.req_n) and 100 or nil  -- as the queue limits' CATCH_UP_MS
        local nt, a = gcra(tats[d], t, C[d .. '_cap'], units(d, ein, eout), now, slack)
        if a then at = a; break end
        new[d] = nt
      end
    end
  end
  if at then
    retry, reason = math.max(1, math.ceil(at - now)), 'rate'
    break
  end
  for d, nt in pairs(new) do tats[d] = nt end
  granted = granted + 1
end
if granted > 0 then
  for _, d in ipairs(DIMS) do S[d .. '_tat'] = tats[d] end
  S.held = held + granted
  if C.req_t and C.req_n then
    local logk = K.cfg .. ':log'
    local args = {}
    for i = 1, math.min(granted, C.req_n) do args[i] = num(now) end
    redis.call('LPUSH', logk, unpack(args))
    redis.call('LTRIM', logk, 0, C.req_n - 1)
    redis.call('PEXPIRE', logk, math.ceil(C.req_w) + 1000)
  end
  redis.call('HSET', K.info, rid, 'P|' .. granted .. '|' .. ein .. '|' .. eout .. '|' .. num(now))
  redis.call('ZADD', K.exp, num(now + ttl), rid)
end
save_state(K, S)
return {granted, retry, reason}
