--[[ expire-held-4: fail jobs that waited too long for a worker with a handler for their name.
KEYS: 1 meta, 2 failed, 3 events, 4 holds
ARGV: 1 prefix, 2 timeout ms, 3 batch limit, 4 events maxlen
A job is held (finish-10.lua, kind H) when a worker without its handler leased it; any worker that
has the handler takes it back to ready at its next trip. One held for longer than the timeout saw
no such worker in that time: it fails (dead-letter set) with error type NoHandler.
Returns: the number of jobs failed, or {-6, 0, reason} when an argument is invalid (nothing written).
Codes: 0 OK, -6 INVALID_INPUT
Events: failed (id, error)
]]
--@include common
--@include flow
--@include retention

local meta, failed, events, holds = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, timeout, limit, maxlen = ARGV[1], int_in(ARGV[2], 0, MAX_MS), int_in(ARGV[3], 1, 10000), ARGV[4]
if not timeout or not limit or prefix == '' then return {-6, 0, 'expire-held arguments'} end
local now = now_ms()
local stamp = num(now)
local names = index_call('SMEMBERS', holds)
local dead = 0
for i = 1, #names do
  if dead >= limit then break end
  local hk = prefix .. 'hold:' .. names[i]
  local ids = index_call('ZRANGEBYSCORE', hk, '-inf', now - timeout, 'LIMIT', 0, limit - dead)
  local err = cjson.encode({type = 'NoHandler', message = 'no worker with a handler for job name ' ..
    string.format('%q', names[i]) .. ' took the job within ' .. math.floor(timeout / 1000) .. ' s'})
  for j = 1, #ids do
    local jk = prefix .. 'job:' .. ids[j]
    if job_call('HDEL', jk, 'held') then  -- (a record edited into another type only leaves the hold)
      redis.call('HSET', jk, 'state', 'failed', 'error', err, 'finished', stamp)
      redis.call('ZADD', failed, stamp, ids[j])
      emit(events, maxlen, 'ev', 'failed', 'id', ids[j], 'error', 'no handler')
      local fl = redis.call('HMGET', jk, 'parent', 'kids')
      flow_ended(prefix, ids[j], fl[1], 'F', err)
      flow_root_ended(meta, 'F', fl[1], fl[2])  -- a flow's root: counted in flows_failed
    end
  end
  call_chunked('ZREM', hk, nil, ids, 1)
  dead = dead + #ids
  if redis.call('EXISTS', hk) == 0 then redis.call('SREM', holds, names[i]) end
end
if dead > 0 then
  incr(meta, 'hwait', -dead)
  trim(meta, failed, prefix, now, 'failed', 100, false)
end
return dead
