--[[ retry-6: send a failed (dead-letter) or cancelled job back to waiting with fresh attempts; a flow
parent some of whose children have not ended goes back to waiting-children instead (it runs once they
have), and a child failure that had failed it no longer counts as having done so (docs/flows.md).
A cancelled parent's cancellation of its children that no mover has taken yet (its "!<id>" record in
its queue's outbox, includes/flow.lua) is withdrawn: the retried parent waits for those children
instead of cancelling them and failing by them. A flow's root leaves the meta's flows_failed (it
counted there when it failed or was cancelled): the flow counters say each root's final outcome.
KEYS: 1 meta, 2 ready, 3 failed, 4 cancelled, 5 events, 6 wake
ARGV: 1 prefix, 2 job id, 3 events maxlen
Returns: {code, state}: 0 OK (state: waiting or waiting-children), -1 NOT_FOUND, -3 WRONG_STATE
Codes: 0 OK, -1 NOT_FOUND, -3 WRONG_STATE, -6 INVALID_INPUT
Events: waiting (id, reason=manual), waiting-children (id, reason=manual)
]]
--@include common
--@include flow

local meta, ready, failed, cancelled, events, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, id, maxlen = ARGV[1], ARGV[2], ARGV[3]
if not id or id == '' or prefix == '' then return {-6, ''} end
local jk = prefix .. 'job:' .. id
local state = job_call('HGET', jk, 'state')  -- (a record edited into another type is no job)
if not state then return {-1, ''} end
if state ~= 'failed' and state ~= 'cancelled' then return {-3, state} end
redis.call('ZREM', state == 'failed' and failed or cancelled, id)
local fl = redis.call('HMGET', jk, 'parent', 'kids')
flow_root_reopened(meta, fl[1], fl[2])  -- a flow's root: out of flows_failed (includes/flow.lua)
-- The record, its log and its streamed output lose the failed/cancelled expiry together: the next run
-- continues the same log, which would otherwise lapse in the middle of it.
redis.call('PERSIST', jk)
redis.call('PERSIST', prefix .. 'log:' .. id)
redis.call('PERSIST', prefix .. 'out:' .. id)
redis.call('HDEL', jk, 'finished', 'cancel', 'token', 'stalls', 'lapses', 'result', 'cfail')
if state == 'cancelled' then redis.call('HDEL', prefix .. 'outbox', '!' .. id) end
if (tonumber(redis.call('HGET', jk, 'pending')) or 0) > 0 then
  redis.call('HSET', jk, 'state', FLOW_WAITING, 'attempts', 0)
  redis.call('ZADD', prefix .. FLOW_WAITING, num(now_ms()), id)
  emit(events, maxlen, 'ev', 'waiting-children', 'id', id, 'reason', 'manual')
  return {0, FLOW_WAITING}
end
redis.call('HSET', jk, 'state', 'waiting', 'attempts', 0)
push_ready(meta, ready, jk, id)
wake(wake_key)
emit(events, maxlen, 'ev', 'waiting', 'id', id, 'reason', 'manual')
return {0, 'waiting'}
