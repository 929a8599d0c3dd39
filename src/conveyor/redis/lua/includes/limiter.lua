--@include gcra

-- Shared named limiters (docs/limits.md, "Named limiters"). One limiter = one hash tag
-- {lim:<name>}, so it may live in another Cluster slot than the queues using it. Needs common.lua.
-- KEYS of every limiter script: 1 cfg (hash, as declared), 2 st (hash, state), 3 exp (zset: hold or
-- reservation id -> expiry ms), 4 info (hash: id -> 'P|n|in|out|start' pending reservation of n jobs,
-- 'H|1|in|out|start' hold of one leased job), 5 use (hash: per-minute usage counters).
-- cfg: req_t/req_cap/req_n/req_w (requests: GCRA ms per unit, units at once, window log size and ms),
--      tin_*, tout_*, tok_* (tokens in, out, total: GCRA), conc (cap), AIMD a_min, a_max, a_inc,
--      a_dec, a_win (successes per increase, in windows of the current limit), cfg (JSON).
-- st: <d>_tat per dimension, held (jobs holding a slot), climit (adaptive limit), succ (successes
--     since the last increase), dec_at (ms of the last decrease), blk (paused until ms), and totals
--     n_ok, n_429, n_timeout, n_err, n_expired, used_in, used_out.

local DIMS = {'req', 'tin', 'tout', 'tok'}

local CFG_FIELDS = {'req_t', 'req_cap', 'req_n', 'req_w', 'tin_t', 'tin_cap', 'tout_t', 'tout_cap', 'tok_t',
  'tok_cap', 'conc', 'a_min', 'a_max', 'a_inc', 'a_dec', 'a_win'}
local ST_FIELDS = {'req_tat', 'tin_tat', 'tout_tat', 'tok_tat', 'held', 'climit', 'succ', 'dec_at', 'blk'}

-- Units one job of estimate (ein, eout) costs in dimension d.
local function units(d, ein, eout)
  if d == 'req' then return 1 end
  if d == 'tin' then return ein end
  if d == 'tout' then return eout end
  return ein + eout
end

-- The concurrency limit in force: the adaptive one when configured, else the cap (nil = none).
local function conc_limit(C, S)
  if C.a_max then
    local l = S.climit or C.a_max
    if C.conc and l > C.conc then l = C.conc end
    return math.floor(l)
  end
  return C.conc
end

-- Move a dimension's TAT by `delta` units (refund < 0, charge > 0); never beyond a full limiter.
local function lshift(S, C, d, delta, now)
  local t = C[d .. '_t']
  if not t or delta == 0 then return end
  local tat = S[d .. '_tat']
  if not tat or tat < now then tat = now end
  tat = tat + delta * t
  if tat < now then tat = now end
  S[d .. '_tat'] = tat
end

-- Refunded requests leave the window log too (their entries carry the reservation's start time).
local function unlog(K, k, start)
  if k > 0 then redis.call('LREM', K.cfg .. ':log', k, num(start)) end
end

-- An entry that cannot be read (edited by hand) is kind 'X': how many slots it held is unknown, so
-- dropping it counts `held` again from the entries that can be read (drop_unreadable); before, it
-- gave nothing back and the slot it held stayed counted for good.
local function parse_info(v)
  local kind, n, ein, eout, start = string.match(v, '^(%a)|(%d+)|(%d+)|(%d+)|(%d+)$')
  if not kind then return 'X', 0, 0, 0, 0 end
  return kind, tonumber(n), tonumber(ein), tonumber(eout), tonumber(start)
end

-- Drop an unreadable entry (expired, released or confirmed by its holder) and count the slots held
-- again: each readable reservation holds its n, each hold one. O(entries), only for such an entry.
local function drop_unreadable(K, S, id)
  redis.call('HDEL', K.info, id)
  redis.call('ZREM', K.exp, id)
  local all = redis.call('HGETALL', K.info)
  local held = 0
  for i = 2, #all, 2 do
    local kind, n = parse_info(all[i])
    if kind ~= 'X' then held = held + n end
  end
  S.held = held
end

-- Give back what an id held: a pending reservation refunds its units and slots; a hold its slot.
local function drop_id(K, C, S, id, now, refund_units)
  local v = redis.call('HGET', K.info, id)
  if not v then return false end
  local kind, n, ein, eout, start = parse_info(v)
  if kind == 'X' then
    drop_unreadable(K, S, id)
    return true
  end
  if kind == 'P' and refund_units then
    for _, d in ipairs(DIMS) do lshift(S, C, d, -n * units(d, ein, eout), now) end
    unlog(K, n, start)
  end
  S.held = math.max(0, (S.held or 0) - n)
  redis.call('HDEL', K.info, id)
  redis.call('ZREM', K.exp, id)
  return true
end

-- Expired reservations and holds (a dead or cut-off worker) give their capacity back.
local function sweep(K, C, S, now)
  local ids = redis.call('ZRANGEBYSCORE', K.exp, '-inf', now, 'LIMIT', 0, 200)
  for i = 1, #ids do
    if drop_id(K, C, S, ids[i], now, true) then S.n_expired = (S.n_expired or 0) + 1 end
    redis.call('ZREM', K.exp, ids[i])
  end
end

local function save_state(K, S)
  local args = {'held', num(S.held or 0)}
  for _, d in ipairs(DIMS) do
    if S[d .. '_tat'] then args[#args + 1] = d .. '_tat'; args[#args + 1] = fmt(S[d .. '_tat']) end
  end
  for _, f in ipairs({'climit', 'succ', 'dec_at', 'blk'}) do
    if S[f] then args[#args + 1] = f; args[#args + 1] = tostring(S[f]) end
  end
  if S.n_expired then args[#args + 1] = 'n_expired'; args[#args + 1] = num(S.n_expired) end
  redis.call('HSET', K.st, unpack(args))
end

local function lkeys()
  return {cfg = KEYS[1], st = KEYS[2], exp = KEYS[3], info = KEYS[4], use = KEYS[5]}
end

local function load_all(K)
  local C = load_fields(K.cfg, CFG_FIELDS)
  local S = load_fields(K.st, ST_FIELDS)
  S.n_expired = tonumber(redis.call('HGET', K.st, 'n_expired'))
  return C, S
end
