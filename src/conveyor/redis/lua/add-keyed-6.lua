--[[ add-keyed-6: enqueue one job that carries a key, race-free across producers and workers.
The body of the core add script (add-5) runs inside, with the job's delay raised as the mode says:
  debounce: a waiting or delayed job of the key is cancelled (replaced); the new job waits at least
            `window` ms, so a job starts only once `window` passed without a newer add of its key.
  throttle: while a job of the key waits (waiting or delayed), an add returns that job (status 0,
            nothing written); otherwise the new job waits until `window` ms after the latest start
            among the key's jobs (the key's hash keeps it; a last job whose record is gone counts as
            started now), so the first runs of a key's jobs start at least `window` ms apart.
  latest:   a waiting or delayed job of the key is cancelled, a running one is asked to stop (the
            cancellation path of cancel-5); the new job is enqueued as given.
The delay is computed before any write; the replaced job is cancelled only after the add succeeded.
KEYS: 1 meta, 2 ready, 3 delayed, 4 events, 5 wake (as add-5), 6 cancelled
ARGV: as add-5 with exactly one job in the 'f' form with no id and no idempotency key, then: mode
      ('debounce', 'throttle' or 'latest'), key, window ms
Returns: add-5's reply (id, status); {-6, position, reason} for bad arguments (nothing written)
Codes: 0 OK, -4 CONFLICT, -6 INVALID_INPUT
Events: as add-5; cancelled (id, by) for a replaced job; cancelling (id, by) for a running one
A key's hash or its last job's record edited by hand into another type names no job: the add goes on
as if the key had none (the hash is replaced after the add).
A replaced job that is a flow node is cancelled as cancel-5 cancels it: a parent's children that have
not ended are cancelled with it (outbox "!<id>" record), a child's parent hears of its end, a root
counts in the meta's flows_failed. The outbox is checked before the first write, as the add's keys.
]]
--@include common
--@include flow
--@include keyed

local keyed_window = int_in(table.remove(ARGV), 0, MAX_MS)
local keyed_key = table.remove(ARGV)
local keyed_mode = table.remove(ARGV)
if not keyed_window or not keyed_key or not string.find(keyed_key, '^[%w%._:@/%+=%-]+$') or #keyed_key > 200
    or (keyed_mode ~= 'debounce' and keyed_mode ~= 'throttle' and keyed_mode ~= 'latest') then
  return {-6, 0, 'keyed arguments'}
end
-- One job in the 'f' form: ARGV[4] = 'f', 5 id, 6 idempotency key, 12 delay ms.
if ARGV[3] ~= '1' or ARGV[4] ~= 'f' or ARGV[5] ~= '' or ARGV[6] ~= '' or not int_in(ARGV[12], 0, MAX_MS) then
  return {-6, 0, 'keyed: one job with a generated id and no idempotency key'}
end
local keyed_prefix = ARGV[1]
local keyed_kk = keyed_prefix .. 'key:' .. keyed_key
local keyed_prev, keyed_state, keyed_started = keyed_last(keyed_kk, keyed_prefix)
local keyed_queued = keyed_state == 'waiting' or keyed_state == 'delayed'
local keyed_delay = tonumber(ARGV[12])
local keyed_throttle_start = nil
if keyed_mode == 'throttle' then
  if keyed_queued then return {keyed_prev, 0} end
  local now = now_ms()
  -- The latest start known among the key's jobs: kept in the key's hash, so a later job that never
  -- started (cancelled) does not hide it.
  local known = tonumber(keyed_get(keyed_kk, 'start'))
  local last = nil
  if keyed_state then
    last = tonumber(keyed_started)  -- nil: the last job never started
  elseif keyed_prev then
    last = now  -- its record is gone: it started (if at all) at or before now
  end
  if last and (not known or last > known) then known = last end
  keyed_throttle_start = known
  if known and known + keyed_window - now > keyed_delay then keyed_delay = known + keyed_window - now end
elseif keyed_mode == 'debounce' then
  if keyed_delay < keyed_window then keyed_delay = keyed_window end
end
ARGV[12] = num(keyed_delay)
-- The set a replaced job enters and the outbox its flow bookkeeping writes (a parent's children to
-- cancel, a child's end), checked before the add writes (common.lua must_be; the add checks the others).
if keyed_prev and keyed_queued and keyed_mode ~= 'throttle' then
  must_be(KEYS[6], 'zset')
  must_be(keyed_prefix .. 'outbox', 'hash')
end

local function add_jobs()
--@add-5
end

local reply = add_jobs()
if reply[1] == -6 or reply[1] == -4 or reply[2] ~= 1 then return reply end
local keyed_id = reply[1]
if keyed_prev and keyed_mode ~= 'throttle' then
  local events, maxlen = KEYS[4], ARGV[2]
  if keyed_queued then
    keyed_cancel(keyed_prefix, KEYS[2], KEYS[3], KEYS[6], events, maxlen, keyed_prev, keyed_state, keyed_id)
  elseif keyed_state == 'active' and keyed_mode == 'latest' then
    keyed_request_cancel(keyed_prefix, events, maxlen, keyed_prev, keyed_id)
  end
end
keyed_remember(keyed_kk, keyed_id, keyed_window, keyed_throttle_start)
return reply
