--[[ delete-jobs-2: delete up to `limit` jobs of one state set, oldest first (drain, purge).
KEYS: 1 the state set (ready, a group's gr:<g>, a name's hold:<name>, delayed, completed, failed, cancelled), 2 events
ARGV: 1 prefix, 2 limit, 3 events maxlen, 4 event name ('' = none)
Returns: {deleted, remaining}, or {-6, 0, reason} for an invalid limit (nothing written)
Codes: 0 OK, -6 INVALID_INPUT
Events: the given event name once per call (count)
]]
--@include common
--@include flow

local set, events = KEYS[1], KEYS[2]
local prefix, limit, maxlen, ev = ARGV[1], int_in(ARGV[2], 1, 10000), ARGV[3], ARGV[4]
if not limit or prefix == '' then return {-6, 0, 'limit'} end
local ids = redis.call('ZRANGE', set, 0, limit - 1)
local grouped_waiting, held = 0, 0
for i = 1, #ids do
  local jk = prefix .. 'job:' .. ids[i]
  local f = job_call('HMGET', jk, 'idem', 'group', 'state', 'held') or {}  -- (another type: no job, deleted)
  local ikey = f[1]
  if f[4] and f[3] == 'waiting' then
    held = held + 1
  elseif f[2] and f[3] == 'waiting' then
    grouped_waiting = grouped_waiting + 1
  end
  if f[3] == 'waiting' or f[3] == 'delayed' then flow_gone(prefix, ids[i], jk, 'Removed') end
  drop_job(prefix, ids[i], ikey)
end
if grouped_waiting > 0 then incr(prefix .. 'meta', 'gwait', -grouped_waiting) end
if held > 0 then incr(prefix .. 'meta', 'hwait', -held) end
if #ids > 0 then
  call_chunked('ZREM', set, nil, ids, 1)
  if ev ~= '' then emit(events, maxlen, 'ev', ev, 'count', #ids) end
end
return {#ids, redis.call('ZCARD', set)}
