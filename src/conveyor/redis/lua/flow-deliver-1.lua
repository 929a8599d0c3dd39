--[[ flow-deliver-1: the parent's half of the hand-over (docs/flows.md, "The hand-over"): count one
child's end in its parent's bookkeeping, at most once per child, and release or fail the parent.
KEYS: 1 the parent's queue meta (the parent's other keys are derived from the prefix: same slot)
ARGV: 1 parent queue prefix, 2 parent id, 3 events maxlen, 4 count N, then N times: child ref
      ("<queue>:<id>"), kind (C completed, F failed), the child's result or error (JSON)
The parent hash holds `pending` (children not yet ended; a value that is not a count is counted
again: flow.lua `flow_pending_add`), `r:<child ref>` (results), `e:<child ref>`
(errors), `nerr` (children whose last end was a failure; a spoiled one starts again), `ocf` (on_child_failure) and `cfail` (the
child that failed it). A child already counted is not counted again; a failed child that completes
later (it was retried) moves from errors to results, and a parent that the child had failed resumes
when no failed child is left.
Children of one parent are delivered together (the mover groups its records by parent), one by one
in the order given.
A failure whose error carries `run` (a child cancelled with its parent, includes/flow.lua) counts only
for the parent of that run (its `ts`): a parent of the same id written anew since ignores it.
A record for a child that is not among the parent's children (`kids`), or for a parent key that
holds a hash that is not a job's record, changes nothing (code 3): the record was written by hand or
is stale, and the mover sets it aside. The children are read once per call.
Returns: one code per child: 0 parent gone (the record is dropped), 1 already counted, 2 counted,
         3 not a child of this parent (nothing written); or {-6, 0, reason} (INVALID_INPUT, nothing written)
Codes: 0 OK, -6 INVALID_INPUT
Events: child (id, child, state), waiting (id, reason=children), failed (id, error), resumed (id),
        waiting-children (id, reason=resumed: a resumed parent waits for children still pending)
]]
--@include common
--@include flow

local meta = KEYS[1]
local p, pid, maxlen, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if p == '' or not pid or pid == '' or not n or n < 1 or n > 10000 or n % 1 ~= 0 or #ARGV ~= 4 + 3 * n then
  return {-6, 0, 'deliver arguments'}
end
local causes = {}
for i = 0, n - 1 do
  local b = 5 + 3 * i
  local kind = ARGV[b + 1]
  local ok, cause = pcall(cjson.decode, ARGV[b + 2])
  if ARGV[b] == '' or (kind ~= 'C' and kind ~= 'F') or not ok then
    return {-6, i + 1, 'child outcome ' .. (i + 1)}
  end
  causes[i + 1] = cause
end
local jk = p .. 'job:' .. pid
local events = p .. 'events'

local function release()
  redis.call('ZREM', p .. FLOW_WAITING, pid)
  redis.call('HSET', jk, 'state', 'waiting')
  push_ready(meta, p .. 'ready', jk, pid)
  wake(p .. 'wake')
  emit(events, maxlen, 'ev', 'waiting', 'id', pid, 'reason', 'children')
end

local kids = nil  -- ' <child ref> <child ref> ... ', read at the first record that needs it

local function is_child(cref)
  if not kids then kids = ' ' .. (redis.call('HGET', jk, 'kids') or '') .. ' ' end
  return string.find(kids, ' ' .. cref .. ' ', 1, true) ~= nil
end

local function one(cref, kind, payload, cause)
  local f = redis.call('HMGET', jk, 'state', 'ocf', 'cfail', 'parent', 'ts')
  local state = f[1]
  if not state then return redis.call('EXISTS', jk) == 1 and 3 or 0 end
  -- a child cancelled with another run of this parent (removed, then its flow sent again): not ours
  if kind == 'F' and type(cause) == 'table' and cause.run ~= nil and tostring(cause.run) ~= (f[5] or '') then
    return 0
  end
  if string.find(cref, '%s') or not is_child(cref) then return 3 end
  local rk, ek = 'r:' .. cref, 'e:' .. cref
  local had_r = redis.call('HEXISTS', jk, rk) == 1
  local had_e = redis.call('HEXISTS', jk, ek) == 1
  if had_r or (kind == 'F' and had_e) then return 1 end
  if kind == 'C' then
    redis.call('HSET', jk, rk, payload)
    if had_e then
      redis.call('HDEL', jk, ek)
      incr(jk, 'nerr', -1)
    else
      flow_pending_add(jk, -1)
    end
  else
    redis.call('HSET', jk, ek, payload)
    incr(jk, 'nerr', 1)
    flow_pending_add(jk, -1)
  end
  emit(events, maxlen, 'ev', 'child', 'id', pid, 'child', cref, 'state', kind == 'C' and 'completed' or 'failed')
  local pending = tonumber(redis.call('HGET', jk, 'pending')) or 0
  local nerr = tonumber(redis.call('HGET', jk, 'nerr')) or 0
  local policy = f[2] or 'fail'
  if state == FLOW_WAITING then
    if kind == 'F' and policy == 'fail' then
      local now = num(now_ms())
      local msg = (type(cause) == 'table' and type(cause.message) == 'string') and cause.message or ''
      local err = cjson.encode({type = 'ChildFailed', child = cref,
                                message = 'child ' .. cref .. ' failed: ' .. string.sub(msg, 1, 500)})
      redis.call('ZREM', p .. FLOW_WAITING, pid)
      redis.call('HSET', jk, 'state', 'failed', 'error', err, 'finished', now, 'cfail', cref)
      redis.call('ZADD', p .. 'failed', now, pid)
      emit(events, maxlen, 'ev', 'failed', 'id', pid, 'error', 'child ' .. cref .. ' failed')
      flow_ended(p, pid, f[4], 'F', err)
      flow_root_ended(meta, 'F', f[4], 'x')
    elseif (kind == 'F' and policy == 'continue') or pending <= 0 then
      release()
    end
  elseif state == 'failed' and f[3] and kind == 'C' and had_e and nerr <= 0 then
    -- the failed child was retried and completed: the parent it had failed carries on
    redis.call('ZREM', p .. 'failed', pid)
    redis.call('PERSIST', jk)
    redis.call('HDEL', jk, 'error', 'finished', 'cfail')
    flow_root_reopened(meta, f[4], 'x')  -- a root it had failed leaves flows_failed
    emit(events, maxlen, 'ev', 'resumed', 'id', pid)
    if pending > 0 then
      redis.call('HSET', jk, 'state', FLOW_WAITING)
      redis.call('ZADD', p .. FLOW_WAITING, num(now_ms()), pid)
      emit(events, maxlen, 'ev', 'waiting-children', 'id', pid, 'reason', 'resumed')
    else
      release()
    end
  end
  return 2
end

local out = {}
for i = 0, n - 1 do
  local b = 5 + 3 * i
  out[i + 1] = one(ARGV[b], ARGV[b + 1], ARGV[b + 2], causes[i + 1])
end
return out
