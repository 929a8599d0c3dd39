--[[ cancel-5: cancel a job. Waiting/delayed/waiting-children jobs end cancelled at once (a flow
child's parent is told, a flow parent's children are cancelled: includes/flow.lua); an active job gets a
cooperative request (its worker sees it at the next heartbeat and cancels the handler).
KEYS: 1 ready, 2 delayed, 3 active, 4 cancelled, 5 events
ARGV: 1 prefix, 2 job id, 3 events maxlen, 4 (optional) the run of the parent whose cancellation
      this is ("K" outbox records, includes/flow.lua): kept as `pcx`, and in the error the parent sees
Returns: {code, state}: code 0 cancelled now, 1 cancellation requested (active), -1 NOT_FOUND,
         -3 WRONG_STATE (already finished; state says which)
Codes: 0 OK, -1 NOT_FOUND, -3 WRONG_STATE, -6 INVALID_INPUT
Events: cancelled (id), cancelling (id)
]]
--@include common
--@include flow

local ready, delayed, active, cancelled, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, id, maxlen, run = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not id or id == '' or prefix == '' or (run and #run > 40) then return {-6, ''} end
local jk = prefix .. 'job:' .. id
local state = job_call('HGET', jk, 'state')  -- (a record edited into another type is no job)
if not state then return {-1, ''} end
local function mark()
  if run and run ~= '' then redis.call('HSET', jk, 'pcx', run) end
end
if state == 'waiting' or state == 'delayed' or state == FLOW_WAITING then
  local stamp = num(now_ms())
  if state == 'waiting' then remove_waiting(ready, jk, id)
  elseif state == 'delayed' then redis.call('ZREM', delayed, id)
  else redis.call('ZREM', prefix .. FLOW_WAITING, id) end
  mark()
  flow_gone(prefix, id, jk, 'Cancelled')
  flow_cancel_kids(prefix, id, jk)
  local fl = redis.call('HMGET', jk, 'parent', 'kids')
  flow_root_ended(prefix .. 'meta', 'X', fl[1], fl[2])
  redis.call('HSET', jk, 'state', 'cancelled', 'finished', stamp)
  redis.call('ZADD', cancelled, stamp, id)
  emit(events, maxlen, 'ev', 'cancelled', 'id', id)
  return {0, 'cancelled'}
end
if state == 'active' then
  mark()
  redis.call('HSET', jk, 'cancel', '1')
  emit(events, maxlen, 'ev', 'cancelling', 'id', id)
  return {1, 'active'}
end
return {-3, state}
