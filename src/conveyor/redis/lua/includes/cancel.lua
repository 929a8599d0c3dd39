-- Cancelling one job: cancel-5.lua (one job) and flow-cancel-kids-1.lua (the children of a cancelled
-- or removed parent, a batch per call). Needs common and flow. `k` holds the queue's ready, delayed,
-- cancelled and events keys; `run` (optional) is the run of the parent whose cancellation this is
-- (includes/flow.lua), kept as `pcx` and in the error the parent sees.
-- Returns code, state: 0 cancelled now, 1 cancellation requested (active), -1 not found, -3 the job
-- has ended already (state says how).
local function cancel_job(prefix, k, id, maxlen, run)
  local jk = prefix .. 'job:' .. id
  local state = job_call('HGET', jk, 'state')  -- (a record edited into another type is no job)
  if not state then return -1, '' end
  local function mark()
    if run and run ~= '' then redis.call('HSET', jk, 'pcx', run) end
  end
  if state == 'waiting' or state == 'delayed' or state == FLOW_WAITING then
    local stamp = num(now_ms())
    if state == 'waiting' then remove_waiting(k.ready, jk, id)
    elseif state == 'delayed' then redis.call('ZREM', k.delayed, id)
    else redis.call('ZREM', prefix .. FLOW_WAITING, id) end
    mark()
    flow_gone(prefix, id, jk, 'Cancelled')
    flow_cancel_kids(prefix, id, jk)
    local fl = redis.call('HMGET', jk, 'parent', 'kids')
    flow_root_ended(prefix .. 'meta', 'X', fl[1], fl[2])
    redis.call('HSET', jk, 'state', 'cancelled', 'finished', stamp)
    redis.call('ZADD', k.cancelled, stamp, id)
    emit(k.events, maxlen, 'ev', 'cancelled', 'id', id)
    return 0, 'cancelled'
  end
  if state == 'active' then
    mark()
    redis.call('HSET', jk, 'cancel', '1')
    emit(k.events, maxlen, 'ev', 'cancelling', 'id', id)
    return 1, 'active'
  end
  return -3, state
end
