-- Retention helper: bounded trimming of a finished-jobs set by count, age and (completed) bytes.
-- meta fields: <policy>_max_count, <policy>_max_age_ms, completed_max_bytes ('-1' or missing = no
-- limit; completed defaults to 100000 records / 24 h / 128 MiB, failed to no limit). Oldest records
-- go first: those over the count, then those over the age, then those over the bytes. Used on the hot
-- path (finish, a few records per batch) and by the maintenance schedule (bounded batches that also
-- drop idempotency keys still pointing at a record).
-- Bytes: a completed record kept without a TTL carries `sz` = payload + result + RECORD_BYTES (its
-- fixed cost: other fields, key, set entry) and meta `completed_bytes` sums them (finish adds,
-- drop_job and remove give back). Records with a result TTL expire by themselves and are not counted.

local RETENTION_DEFAULTS = {completed = {100000, 86400000, 134217728}, failed = {-1, -1, -1}}
local RECORD_BYTES = 400

local function drop_records(set, prefix, ids, with_idem)
  for i = 1, #ids do
    drop_job(prefix, ids[i], with_idem and job_call('HGET', prefix .. 'job:' .. ids[i], 'idem') or nil)
  end
  call_chunked('ZREM', set, nil, ids, 1)
  return #ids
end

-- Deletes at most `limit` records of `set` over the retention `policy`; returns how many went.
local function trim(meta, set, prefix, now, policy, limit, with_idem)
  local lim = redis.call('HMGET', meta, policy .. '_max_count', policy .. '_max_age_ms', policy .. '_max_bytes',
                        policy .. '_bytes')
  local defaults = RETENTION_DEFAULTS[policy]
  local max_count = tonumber(lim[1]) or defaults[1]
  local max_age = tonumber(lim[2]) or defaults[2]
  local max_bytes = tonumber(lim[3]) or defaults[3]
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
  local total = tonumber(lim[4]) or 0
  if max_bytes >= 0 and deleted < limit and total > max_bytes then
    if deleted > 0 then total = tonumber(redis.call('HGET', meta, policy .. '_bytes')) or 0 end
    local ids = redis.call('ZRANGE', set, 0, limit - deleted - 1)
    local gone = {}
    for i = 1, #ids do
      if total <= max_bytes then break end
      total = total - (tonumber(job_call('HGET', prefix .. 'job:' .. ids[i], 'sz')) or 0)
      gone[#gone + 1] = ids[i]
    end
    deleted = deleted + drop_records(set, prefix, gone, with_idem)
    -- The whole set went and the total still says more: it had drifted (a record deleted by hand).
    if #gone == #ids and #ids < limit - deleted + #gone and total > max_bytes then
      redis.call('HSET', meta, policy .. '_bytes', 0)
    end
  end
  return deleted
end
