--[[ recover-stalled-7: return jobs whose lease expired to waiting, or fail those that stall too often.
KEYS: 1 meta, 2 ready, 3 active, 4 failed, 5 cancelled, 6 events, 7 wake
ARGV: 1 prefix, 2 max stalls (a job's stall count above this fails it), 3 batch limit, 4 events maxlen
The stalled run does not count as an attempt; the old lease token is cleared so a late write from the
lost worker is rejected. A job whose cancellation was requested ends cancelled instead.
Returns: {recovered, failed}
Codes: 0 OK
Events: stalled (id, stalls), failed (id, error), cancelled (id)
]]
--@include common
--@include retention

local meta, ready, active, failed, cancelled, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local wake_key = KEYS[7]
local prefix, max_stalls, limit, maxlen = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local now = now_ms()
local stamp = num(now)
local expired = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, limit)
local recovered, dead = 0, 0
for i = 1, #expired do
  local id = expired[i]
  local jk = prefix .. 'job:' .. id
  if redis.call('EXISTS', jk) == 1 then
    local stalls = redis.call('HINCRBY', jk, 'stalls', 1)
    redis.call('HINCRBY', jk, 'attempts', -1)
    redis.call('HDEL', jk, 'token')
    local group = redis.call('HGET', jk, 'group')
    if group then group_release(prefix, group) end
    if redis.call('HGET', jk, 'cancel') == '1' then
      redis.call('HSET', jk, 'state', 'cancelled', 'finished', stamp)
      redis.call('ZADD', cancelled, stamp, id)
      emit(events, maxlen, 'ev', 'cancelled', 'id', id)
    elseif stalls > max_stalls then
      local err = cjson.encode({type = 'Stalled', message = 'job stalled ' .. stalls ..
        ' times (its worker stopped renewing the lease)'})
      redis.call('HSET', jk, 'state', 'failed', 'error', err, 'finished', stamp)
      redis.call('ZADD', failed, stamp, id)
      emit(events, maxlen, 'ev', 'failed', 'id', id, 'error', 'stalled too often')
      dead = dead + 1
    else
      redis.call('HSET', jk, 'state', 'waiting')
      push_ready(meta, ready, jk, id)
      emit(events, maxlen, 'ev', 'stalled', 'id', id, 'stalls', stalls)
      recovered = recovered + 1
    end
  end
end
if #expired > 0 then redis.call('ZREM', active, unpack(expired)) end
if recovered > 0 then wake(wake_key) end
if dead > 0 then trim(meta, failed, prefix, now, 'failed') end
return {recovered, dead}
