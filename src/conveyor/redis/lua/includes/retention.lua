-- Retention helper: bounded trimming of a finished-jobs set by count and age (limits in meta).
-- meta fields: <policy>_max_count, <policy>_max_age_ms ('-1' or missing = no limit; completed
-- defaults to 100000 records / 24 h, failed to no limit). Oldest records go first: those over the
-- count, then those over the age. Used on the hot path (finish, a few records per batch) and by the
-- maintenance schedule (bounded batches that also drop idempotency keys still pointing at a record).

local RETENTION_DEFAULTS = {completed = {100000, 86400000}, failed = {-1, -1}}

local function drop_records(set, prefix, ids, with_idem)
  for i = 1, #ids do
    drop_job(prefix, ids[i], with_idem and redis.call('HGET', prefix .. 'job:' .. ids[i], 'idem') or nil)
  end
  call_chunked('ZREM', set, nil, ids, 1)
  return #ids
end

-- Deletes at most `limit` records of `set` over the retention `policy`; returns how many went.
local function trim(meta, set, prefix, now, policy, limit, with_idem)
  local lim = redis.call('HMGET', meta, policy .. '_max_count', policy .. '_max_age_ms')
  local defaults = RETENTION_DEFAULTS[policy]
  local max_count = tonumber(lim[1]) or defaults[1]
  local max_age = tonumber(lim[2]) or defaults[2]
  local deleted = 0
  if max_count >= 0 then
    local over = redis.call('ZCARD', set) - max_count
    if over > 0 then
      if over > limit then over = limit end
      deleted = drop_records(set, prefix, redis.call('ZRANGE', set, 0, over - 1), with_idem)
    end
  end
  if max_age >= 0 and deleted < limit then
    local old = redis.call('ZRANGEBYSCORE', set, '-inf', num(now - max_age), 'LIMIT', 0, limit - deleted)
    deleted = deleted + drop_records(set, prefix, old, with_idem)
  end
  return deleted
end
