-- Retention helper: bounded trimming of a finished-jobs set by count and age (limits in meta).
-- meta fields: <state>_max_count, <state>_max_age_ms ('-1' or missing = no limit; completed
-- defaults to 100000 records / 24 h, failed to no limit). At most 100 records go per call.

local RETENTION_DEFAULTS = {completed = {100000, 86400000}, failed = {-1, -1}}

local function drop_records(set, prefix, ids)
  for i = 1, #ids do
    redis.call('DEL', prefix .. 'job:' .. ids[i], prefix .. 'log:' .. ids[i])
  end
  if #ids > 0 then redis.call('ZREM', set, unpack(ids)) end
end

local function trim(meta, set, prefix, now, state)
  local lim = redis.call('HMGET', meta, state .. '_max_count', state .. '_max_age_ms')
  local defaults = RETENTION_DEFAULTS[state]
  local max_count = tonumber(lim[1]) or defaults[1]
  local max_age = tonumber(lim[2]) or defaults[2]
  if max_count >= 0 then
    local over = redis.call('ZCARD', set) - max_count
    if over > 0 then
      if over > 100 then over = 100 end
      drop_records(set, prefix, redis.call('ZRANGE', set, 0, over - 1))
    end
  end
  if max_age >= 0 then
    drop_records(set, prefix, redis.call('ZRANGEBYSCORE', set, '-inf', num(now - max_age), 'LIMIT', 0, 100))
  end
end
