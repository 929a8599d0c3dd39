--[[ finish-9: record the outcomes of a batch of leased jobs, then lease up to `want` more.
KEYS: 1 meta, 2 ready, 3 delayed, 4 active, 5 completed, 6 failed, 7 cancelled, 8 events, 9 wake
ARGV: 1 prefix, 2 worker id, 3 lease ms, 4 want, 5 events maxlen, 6 outcome count,
      then 6 fields per outcome: id, token, kind, payload, number, note
      kind C completed: payload = result JSON, number = record ttl ms (-1 keep, 0 delete now)
      kind R retry:     payload = error JSON,  number = delay ms before the next attempt
      kind F failed:    payload = error JSON,  number = record ttl ms (-1 keep)
      kind X cancelled: payload = error JSON,  number = unused
      kind B back:      payload = reason,      number = delay ms (the attempt is refunded)
      note: short text for the event (error summary or reason)
      A retry or back-to-waiting outcome of a job whose cancellation was requested ends it cancelled.
Returns: one code per outcome (0 OK, -1 NOT_FOUND, -2 LEASE_LOST), then the claim reply
         (next_due_in_ms, then id, token, attempt, name, data, opts per leased job).
Codes: 0 OK, -1 NOT_FOUND, -2 LEASE_LOST
Events: completed, retrying, failed, cancelled, active
]]
--@include common
--@include claim
--@include retention

local k = {meta = KEYS[1], ready = KEYS[2], delayed = KEYS[3], active = KEYS[4], completed = KEYS[5],
           failed = KEYS[6], cancelled = KEYS[7], events = KEYS[8], wake = KEYS[9]}
local prefix, worker, lease_ms, want = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local maxlen, count = ARGV[5], tonumber(ARGV[6])
local now = now_ms()
local stamp = num(now)
local codes = {}
local done_ids = {}
local trim_completed, trim_failed = false, false

for i = 0, count - 1 do
  local b = 7 + i * 6
  local id, token, kind, payload = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local number, note = tonumber(ARGV[b + 4]), ARGV[b + 5]
  local jk = prefix .. 'job:' .. id
  local f = redis.call('HMGET', jk, 'token', 'state', 'attempts', 'cancel')
  -- A job whose cancellation was requested does not go back to the queue.
  if f[4] == '1' and (kind == 'R' or kind == 'B') then kind = 'X' end
  if not f[2] then
    codes[#codes + 1] = -1
  elseif f[1] ~= token or f[2] ~= 'active' then
    codes[#codes + 1] = -2
  else
    codes[#codes + 1] = 0
    done_ids[#done_ids + 1] = id
    if kind == 'C' then
      if number == 0 then
        redis.call('DEL', jk, prefix .. 'log:' .. id)
      else
        redis.call('HSET', jk, 'state', 'completed', 'result', payload, 'finished', stamp)
        redis.call('ZADD', k.completed, stamp, id)
        if number > 0 then
          redis.call('PEXPIRE', jk, number)
          redis.call('PEXPIRE', prefix .. 'log:' .. id, number)
        end
        trim_completed = true
      end
      emit(k.events, maxlen, 'ev', 'completed', 'id', id, 'att', f[3])
    elseif kind == 'R' then
      redis.call('HSET', jk, 'error', payload)
      if number > 0 then
        redis.call('HSET', jk, 'state', 'delayed')
        push_delayed(k.delayed, k.wake, id, now + number)
      else
        redis.call('HSET', jk, 'state', 'waiting')
        push_ready(k.meta, k.ready, jk, id)
        wake(k.wake)
      end
      emit(k.events, maxlen, 'ev', 'retrying', 'id', id, 'att', f[3], 'delay', number, 'error', note)
    elseif kind == 'F' then
      redis.call('HSET', jk, 'state', 'failed', 'error', payload, 'finished', stamp)
      redis.call('ZADD', k.failed, stamp, id)
      if number > 0 then
        redis.call('PEXPIRE', jk, number)
        redis.call('PEXPIRE', prefix .. 'log:' .. id, number)
      end
      trim_failed = true
      emit(k.events, maxlen, 'ev', 'failed', 'id', id, 'att', f[3], 'error', note)
    elseif kind == 'X' then
      redis.call('HSET', jk, 'state', 'cancelled', 'error', payload, 'finished', stamp)
      redis.call('ZADD', k.cancelled, stamp, id)
      emit(k.events, maxlen, 'ev', 'cancelled', 'id', id)
    else -- 'B': back to waiting without using an attempt
      redis.call('HINCRBY', jk, 'attempts', -1)
      if number > 0 then
        redis.call('HSET', jk, 'state', 'delayed')
        push_delayed(k.delayed, k.wake, id, now + number)
      else
        redis.call('HSET', jk, 'state', 'waiting')
        push_ready(k.meta, k.ready, jk, id)
        wake(k.wake)
      end
      emit(k.events, maxlen, 'ev', 'retrying', 'id', id, 'att', f[3], 'delay', number, 'reason', note)
    end
  end
end
if #done_ids > 0 then
  redis.call('ZREM', k.active, unpack(done_ids))
end
if trim_completed then trim(k.meta, k.completed, prefix, now, 'completed') end
if trim_failed then trim(k.meta, k.failed, prefix, now, 'failed') end

local claimed = claim(k, prefix, worker, lease_ms, want, now, maxlen)
for i = 1, #claimed do
  codes[#codes + 1] = claimed[i]
end
return codes
