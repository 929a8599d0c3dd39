-- Keyed jobs (debounce, throttle, latest wins; docs/llm.md): the last job added with a key is
-- remembered in <p>key:<key> (hash: job = id; for throttle also start = the latest start known of
-- the key's jobs, ms), so the next add with the key can find it. Needs common.lua and flow.lua.

-- How long a key's hash outlives its last add, beyond the window (ms): 7 days.
local KEYED_KEEP_MS = 604800000

-- A field of the key's hash. A hash edited by hand into another type names no job: it reads as
-- empty, and keyed_remember replaces it (nothing is written before the add's own checks).
local KEYED_SPOILED = false
local function keyed_get(kk, field)
  local r = redis.pcall('HGET', kk, field)
  if type(r) == 'table' and r.err then
    if string.sub(r.err, 1, 9) ~= 'WRONGTYPE' then error(r) end
    KEYED_SPOILED = true
    return nil
  end
  return r
end

-- The key's last job and that job's state and last start (nil when there is none or it is gone; a
-- record of another type, edited by hand, is gone: common.lua job_call).
local function keyed_last(kk, prefix)
  local id = keyed_get(kk, 'job')
  if not id then return nil, nil, nil end
  local f = job_call('HMGET', prefix .. 'job:' .. id, 'state', 'started')
  if not f then return id, nil, nil end
  return id, f[1], f[2]
end

-- Cancel a waiting or delayed job at once, as cancel-5 does (includes/cancel.lua); `by` names the job
-- that replaced it. A flow node gets a cancelled one's bookkeeping: a parent's children that have not
-- ended are cancelled with it (its outbox "!<id>" record, carried out by the mover), a child's parent
-- hears of its end (an outbox record: it never waits for it), a root counts in flows_failed. The
-- caller checked the outbox's type before its first write.
local function keyed_cancel(prefix, ready, delayed, cancelled, events, maxlen, id, state, by)
  local jk = prefix .. 'job:' .. id
  local stamp = num(now_ms())
  if state == 'waiting' then remove_waiting(ready, jk, id) else redis.call('ZREM', delayed, id) end
  local fl = redis.call('HMGET', jk, 'parent', 'kids')
  if fl[1] then flow_gone(prefix, id, jk, 'Cancelled') end
  if fl[2] then flow_cancel_kids(prefix, id, jk) end
  flow_root_ended(prefix .. 'meta', 'X', fl[1], fl[2])
  redis.call('HSET', jk, 'state', 'cancelled', 'finished', stamp)
  redis.call('ZADD', cancelled, stamp, id)
  emit(events, maxlen, 'ev', 'cancelled', 'id', id, 'by', by)
end

-- Ask the running job to stop, as cancel-5 does for an active job (its worker sees the request at
-- its next heartbeat and cancels the handler).
local function keyed_request_cancel(prefix, events, maxlen, id, by)
  redis.call('HSET', prefix .. 'job:' .. id, 'cancel', '1')
  emit(events, maxlen, 'ev', 'cancelling', 'id', id, 'by', by)
end

local function keyed_remember(kk, id, window, start)
  if KEYED_SPOILED then redis.call('DEL', kk) end
  redis.call('HSET', kk, 'job', id)
  if start then redis.call('HSET', kk, 'start', num(start)) end
  redis.call('PEXPIRE', kk, window + KEYED_KEEP_MS)
end
