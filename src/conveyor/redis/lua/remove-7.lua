--[[ remove-7: delete a job that is not active (its record, log, output and idempotency key). A flow
child that had not ended counts as failed for its parent; a flow parent's children that have not ended
are cancelled (through the outbox, includes/flow.lua).
KEYS: 1 ready, 2 delayed, 3 completed, 4 failed, 5 cancelled, 6 events, 7 active
ARGV: 1 prefix, 2 job id, 3 events maxlen
Returns: {code, state}: 0 OK, -1 NOT_FOUND, -3 WRONG_STATE (active: cancel it first)
Codes: 0 OK, -1 NOT_FOUND, -3 WRONG_STATE, -6 INVALID_INPUT
Events: removed (id)
]]
--@include common
--@include flow

local sets = {waiting = KEYS[1], delayed = KEYS[2], completed = KEYS[3], failed = KEYS[4], cancelled = KEYS[5]}
local events = KEYS[6]
local prefix, id, maxlen = ARGV[1], ARGV[2], ARGV[3]
if not id or id == '' or prefix == '' then return {-6, ''} end
local jk = prefix .. 'job:' .. id
local f = job_call('HMGET', jk, 'state', 'idem', 'sz', 'pending') or {}  -- (a record edited into
local state = f[1]                                                        -- another type is no job)
if not state then return {-1, ''} end
if state == 'active' then return {-3, state} end
if state == 'waiting' or state == 'delayed' or state == FLOW_WAITING then
  flow_gone(prefix, id, jk, 'Removed')  -- a flow child removed before it ended counts as failed
  flow_cancel_kids(prefix, id, jk)
elseif state ~= 'cancelled' and (tonumber(f[4]) or 1) > 0 and redis.call('HEXISTS', jk, 'kids') == 1 then
  -- an ended parent with children still pending (failed by a child under `fail`, or run early under
  -- `continue`): they would run on for a parent that is gone (a cancelled one cancelled them already)
  flow_cancel_kids(prefix, id, jk)
end
if state == FLOW_WAITING then
  redis.call('ZREM', prefix .. FLOW_WAITING, id)
elseif state == 'waiting' then
  remove_waiting(sets.waiting, jk, id)
elseif sets[state] then
  redis.call('ZREM', sets[state], id)
end
if f[2] then
  local ik = prefix .. 'idem:' .. f[2]
  if idem_owner(ik, true) == id then redis.call('DEL', ik) end
end
if f[3] then incr(prefix .. 'meta', 'completed_bytes', -(tonumber(f[3]) or 0)) end
redis.call('DEL', jk, prefix .. 'log:' .. id, prefix .. 'out:' .. id)
emit(events, maxlen, 'ev', 'removed', 'id', id)
return {0, state}
