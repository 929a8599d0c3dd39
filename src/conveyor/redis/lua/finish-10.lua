--[[ finish-10: one worker trip: record the outcomes of leased jobs, then lease up to `want` more.
KEYS: 1 meta, 2 ready, 3 delayed, 4 active, 5 completed, 6 failed, 7 cancelled, 8 events, 9 wake, 10 trip record
ARGV: 1 prefix, 2 worker id, 3 lease ms, 4 want, 5 events maxlen, 6 trip record ttl ms (0 = no record:
      a claim outside the trip protocol), 7 ack count A, 8 handler-name count N, 9 outcome count C,
      then A trip ids whose replies the worker received (their records are deleted),
      then N job names the worker has handlers for (sent when the hold version changed: held jobs of
      those names go back to ready before the claim),
      then 7 fields per outcome: id, token, kind, payload, number, note, cost
      kind C completed: payload = result JSON, number = record ttl ms (-1 keep, 0 delete now)
      kind R retry:     payload = error JSON,  number = delay ms before the next attempt
      kind F failed:    payload = error JSON,  number = record ttl ms (-1 keep)
      kind X cancelled: payload = error JSON,  number = unused (-1..)
      kind B back:      payload = reason,      number = delay ms (the attempt is refunded)
      kind T throttled: as B, and claiming stops for the job's group (or the queue when it has no
                        group) across all workers for `number` ms (upstream said "rate limited")
      kind H held:      no handler for the job's name on this worker: the job waits in
                        <p>hold:<name> for a worker that has one (the attempt is refunded)
      kind W wait:      the handler waits for its flow children (includes/flow.lua): waiting-children
                        while some have not ended, else ready again (the attempt is refunded); failed
                        (ChildFailed) when, under on_child_failure=fail, a child has failed
      note: short text for the event (error summary or reason)
      cost: units the run really used ('' = not reported); corrects the cost limiters by
            (cost - units charged at claim)
      An outcome for a job whose record is gone (or is not a hash: edited by hand) answers NOT_FOUND
      and takes its id out of `active`.
      A retry, back-to-waiting or held outcome of a job whose cancellation was requested ends it
      cancelled. An outcome for a job that still carries its token but is no longer active was
      recorded by an earlier run of the same trip: it answers OK and writes nothing.
      Every argument is checked, and every job record read, before the first write: a bad argument
      refuses the whole trip, and a key that moved away while the queue's slot migrates fails the
      script before it wrote anything (a fault; the worker sends the same trip again).
Returns: one code per outcome (0 OK, -1 NOT_FOUND, -2 LEASE_LOST), then the claim reply (next_due_in_ms,
         hold version, then id, token, attempt, name, data, opts per leased job);
         or {-6, position, reason} (INVALID_INPUT: outcome `position`, 0 = the trip's own arguments).
Codes: 0 OK, -1 NOT_FOUND, -2 LEASE_LOST, -6 INVALID_INPUT
Events: completed, retrying, failed, cancelled, held, waiting-children, active
]]
--@include common
--@include claim
--@include retention
--@include trip
--@lazy flow

local k = {meta = KEYS[1], ready = KEYS[2], delayed = KEYS[3], active = KEYS[4], completed = KEYS[5],
           failed = KEYS[6], cancelled = KEYS[7], events = KEYS[8], wake = KEYS[9]}
local prefix, worker, maxlen = ARGV[1], ARGV[2], ARGV[5]
local lease_ms, want = int_in(ARGV[3], 1, MAX_MS), int_in(ARGV[4], 0, 1000)
local ttl = int_in(ARGV[6], 0, MAX_MS)
local nack, nnames, count = int_in(ARGV[7], 0, 1000), int_in(ARGV[8], 0, 1000), int_in(ARGV[9], 0, 10000)
if not (lease_ms and want and ttl and nack and nnames and count) or prefix == '' or worker == ''
    or #ARGV ~= 9 + nack + nnames + count * 7 then
  return {-6, 0, 'trip arguments'}
end
local W = 7
local first = 10 + nack + nnames
-- The least `number` of each outcome kind (at most MAX_MS for every kind).
local LEAST = {C = -1, R = 0, F = -1, X = -1, B = 0, T = 0, H = 0, W = 0}
for i = 0, count - 1 do
  local b = first + i * W
  local least = LEAST[ARGV[b + 2]]
  local cost = ARGV[b + 6]
  if ARGV[b] == '' or ARGV[b + 1] == '' or not least or not int_in(ARGV[b + 4], least, MAX_MS)
      or (cost ~= '' and not int_in(cost, 0, 1e12)) then
    return {-6, i + 1, 'outcome ' .. (i + 1) .. ' of job ' .. ARGV[b]}
  end
end

if ttl > 0 then
  local replay = trip_replay(KEYS[10], ttl, k.meta, prefix)
  if replay then return replay end
end
local acks, names = {}, {}
for i = 10, 9 + nack do acks[#acks + 1] = ARGV[i] end
for i = 10 + nack, first - 1 do names[#names + 1] = ARGV[i] end

-- Every job record is read before the first write: while the queue's slot migrates, a key already
-- moved fails the script at its read, so the trip fails whole (a fault the worker resends).
local fields = {}
for i = 0, count - 1 do
  local b = first + i * W
  local jk = prefix .. 'job:' .. ARGV[b]
  -- ('name' is used by kind H; 'cw' is the worker a capped queue counted the job for: capshare.lua)
  -- (a record edited into another type is no job: it answers as a missing one, NOT_FOUND)
  fields[i] = job_call('HMGET', jk, 'token', 'state', 'attempts', 'cancel', 'group', 'chg', 'parent', 'kids',
    'name', 'cw') or {}
end
trip_ack(prefix, acks)

local now = now_ms()
local stamp = num(now)

-- Back to the queue: delayed by `delay` ms, or ready now.
local function requeue(jk, id, delay)
  if delay > 0 then
    redis.call('HSET', jk, 'state', 'delayed')
    push_delayed(k.delayed, k.wake, id, now + delay)
  else
    redis.call('HSET', jk, 'state', 'waiting')
    push_ready(k.meta, k.ready, jk, id)
    wake(k.wake)
  end
end

local codes = {}
local done_ids = {}
local seen = {}
local completed_ids = {}  -- score/member pairs, added to `completed` once per trip
local deletes = {}        -- records, logs and output of completed jobs that keep no result, deleted once per trip
local kept_bytes = 0      -- sizes of the records retained without a TTL (meta completed_bytes)
local trim_completed, trim_failed = false, false

for i = 0, count - 1 do
  local b = first + i * W
  local id, token, kind, payload = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local number, note = tonumber(ARGV[b + 4]), ARGV[b + 5]
  local jk = prefix .. 'job:' .. id
  local f = fields[i]
  -- A job whose cancellation was requested does not go back to the queue.
  if f[4] == '1' and (kind == 'R' or kind == 'B' or kind == 'T' or kind == 'H' or kind == 'W') then kind = 'X' end
  if seen[id] then
    codes[#codes + 1] = seen[id]  -- the same job twice in one trip: its first outcome stands
  elseif not f[2] then
    -- The record is gone (deleted under the lease: a trip never runs on a node the record has not
    -- reached, see above), so its id leaves `active` now rather than waiting there for the sweep.
    codes[#codes + 1] = -1
    done_ids[#done_ids + 1] = id
  elseif f[1] ~= token then
    codes[#codes + 1] = -2
  elseif f[2] ~= 'active' then
    -- Recorded by an earlier run of this trip whose reply was lost (or that a fault stopped part-way):
    -- the lease ended there, so the job leaves `active` if it is still listed.
    codes[#codes + 1] = 0
    done_ids[#done_ids + 1] = id
  else
    seen[id] = (kind == 'C' and number == 0) and -1 or 0
    codes[#codes + 1] = 0
    done_ids[#done_ids + 1] = id
    if kind == 'C' then
      if number == 0 then
        deletes[#deletes + 1] = jk
        deletes[#deletes + 1] = prefix .. 'log:' .. id
        deletes[#deletes + 1] = prefix .. 'out:' .. id
      else
        if number < 0 then  -- kept without a TTL: counted against completed_max_bytes (retention.lua)
          local sz = #payload + redis.call('HSTRLEN', jk, 'data') + RECORD_BYTES
          kept_bytes = kept_bytes + sz
          redis.call('HSET', jk, 'state', 'completed', 'result', payload, 'finished', stamp, 'sz', sz)
        else
          redis.call('HSET', jk, 'state', 'completed', 'result', payload, 'finished', stamp)
        end
        completed_ids[#completed_ids + 1] = stamp
        completed_ids[#completed_ids + 1] = id
        if number > 0 then
          redis.call('PEXPIRE', jk, number)
          redis.call('PEXPIRE', prefix .. 'log:' .. id, number)
          redis.call('PEXPIRE', prefix .. 'out:' .. id, number)
        end
        trim_completed = true
      end
      emit(k.events, maxlen, 'ev', 'completed', 'id', id, 'att', f[3])
    elseif kind == 'R' then
      redis.call('HSET', jk, 'error', payload)
      requeue(jk, id, number)
      emit(k.events, maxlen, 'ev', 'retrying', 'id', id, 'att', f[3], 'delay', number, 'error', note)
    elseif kind == 'F' then
      redis.call('HSET', jk, 'state', 'failed', 'error', payload, 'finished', stamp)
      redis.call('ZADD', k.failed, stamp, id)
      if number > 0 then
        redis.call('PEXPIRE', jk, number)
        redis.call('PEXPIRE', prefix .. 'log:' .. id, number)
        redis.call('PEXPIRE', prefix .. 'out:' .. id, number)
      end
      trim_failed = true
      emit(k.events, maxlen, 'ev', 'failed', 'id', id, 'att', f[3], 'error', note)
    elseif kind == 'X' then
      redis.call('HSET', jk, 'state', 'cancelled', 'error', payload, 'finished', stamp)
      redis.call('ZADD', k.cancelled, stamp, id)
      emit(k.events, maxlen, 'ev', 'cancelled', 'id', id)
    elseif kind == 'H' then
      local name = f[9]
      redis.call('HSET', jk, 'state', 'waiting', 'held', name, 'attempts', math.max(0, count_of(f[3]) - 1))
      index_call('ZADD', prefix .. 'hold:' .. name, stamp, id)
      index_call('SADD', prefix .. 'holds', name)
      incr(k.meta, 'hwait', 1)
      incr(k.meta, 'hver', 1)
      wake(k.wake)
      emit(k.events, maxlen, 'ev', 'held', 'id', id, 'name', name, 'reason', note)
    elseif kind == 'W' then
      local failed_by = flow_wait(prefix, k.meta, k.ready, k.wake, jk, id, now)
      if failed_by then  -- under `fail`, a child had failed while the job ran
        emit(k.events, maxlen, 'ev', 'failed', 'id', id, 'error', 'child ' .. failed_by .. ' failed')
      else
        emit(k.events, maxlen, 'ev', 'waiting-children', 'id', id)
      end
    else -- 'B' or 'T': back to waiting without using an attempt (written whole: see count_of)
      redis.call('HSET', jk, 'attempts', math.max(0, count_of(f[3]) - 1))
      if kind == 'T' and number > 0 then block_claims(prefix, k.meta, f[5], now + number) end
      requeue(jk, id, number)
      emit(k.events, maxlen, 'ev', 'retrying', 'id', id, 'att', f[3], 'delay', number, 'reason', note)
    end
    -- flows: the child's half of the hand-over; a cancelled parent cancels its children
    if f[7] and (kind == 'C' or kind == 'F' or kind == 'X') then
      flow_ended(prefix, id, f[7], kind == 'C' and 'C' or 'F', kind == 'X' and flow_run_error(jk, payload) or payload)
    end
    if kind == 'X' then flow_cancel_kids(prefix, id, jk) end
    if f[8] and (kind == 'C' or kind == 'F' or kind == 'X') then flow_root_ended(k.meta, kind, f[7], f[8]) end
    if f[5] then group_release(prefix, f[5]) end
    if f[10] then cap_release(prefix, jk, f[10], false) end
    local used = ARGV[b + 6]
    if f[6] and used ~= '' then cost_correct(prefix, f[5], tonumber(used) - tonumber(f[6]), now) end
  end
end
call_chunked('ZREM', k.active, nil, done_ids, 1)
call_chunked('ZADD', k.completed, nil, completed_ids, 2)
if kept_bytes > 0 then incr(k.meta, 'completed_bytes', kept_bytes) end
for from = 1, #deletes, UNPACK_SLICE do
  redis.call('DEL', unpack(deletes, from, math.min(#deletes, from + UNPACK_SLICE - 1)))
end
if trim_completed then trim(k.meta, k.completed, prefix, now, 'completed', 100, false) end
if trim_failed then trim(k.meta, k.failed, prefix, now, 'failed', 100, false) end

local claimed = claim(k, prefix, worker, lease_ms, want, now, maxlen, names)
if ttl > 0 then trip_record(KEYS[10], ttl, codes, claimed) end
for i = 1, #claimed do
  codes[#codes + 1] = claimed[i]
end
return codes
