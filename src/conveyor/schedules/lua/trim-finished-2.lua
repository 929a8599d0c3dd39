--[[ trim-finished-2: delete up to `limit` finished job records over a queue's retention policy.
KEYS: 1 meta, 2 the finished set (completed, failed or cancelled)
ARGV: 1 prefix (e.g. "cv:{q}:"), 2 policy ('completed' or 'failed'), 3 now ms, 4 limit
meta fields: <policy>_max_count, <policy>_max_age_ms ('-1' = no limit; when missing, completed
defaults to 100000 records / 24 h and failed to no limit, as in lua/includes/retention.lua).
Oldest records go first: those over the count, then those over the age. The job hash, its log and
an idempotency key still pointing at it are deleted together.
Returns: {deleted, more} where more = 1 when another call may find more to delete
]]
local meta, set = KEYS[1], KEYS[2]
local prefix, policy, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local DEFAULTS = {completed = {100000, 86400000}, failed = {-1, -1}}
local lim = redis.call('HMGET', meta, policy .. '_max_count', policy .. '_max_age_ms')
local max_count = tonumber(lim[1]) or DEFAULTS[policy][1]
local max_age = tonumber(lim[2]) or DEFAULTS[policy][2]

local function drop(ids)
  for i = 1, #ids do
    local jk = prefix .. 'job:' .. ids[i]
    local ikey = redis.call('HGET', jk, 'idem')
    if ikey then
      local ik = prefix .. 'idem:' .. ikey
      if redis.call('GET', ik) == ids[i] then redis.call('DEL', ik) end
    end
    redis.call('DEL', jk, prefix .. 'log:' .. ids[i])
  end
  if #ids > 0 then redis.call('ZREM', set, unpack(ids)) end
  return #ids
end

local deleted = 0
if max_count >= 0 then
  local over = redis.call('ZCARD', set) - max_count
  if over > 0 then
    if over > limit then over = limit end
    deleted = drop(redis.call('ZRANGE', set, 0, over - 1))
  end
end
if max_age >= 0 and deleted < limit then
  local cutoff = string.format('%.0f', now - max_age)
  deleted = deleted + drop(redis.call('ZRANGEBYSCORE', set, '-inf', cutoff, 'LIMIT', 0, limit - deleted))
end
local more = 0
if deleted >= limit then more = 1 end
return {deleted, more}
