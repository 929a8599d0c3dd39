--[[ obliterate-15: delete a whole queue, a bounded batch per call; call until it returns 0 remaining.
KEYS: 1 meta, 2 ready, 3 delayed, 4 active, 5 completed, 6 failed, 7 cancelled, 8 events, 9 wake, 10 limits, 11 gq, 12 gpark, 13 gcap, 14 groups, 15 holds
ARGV: 1 prefix, 2 force ('1' = delete active jobs too), 3 batch limit (jobs deleted per call)
Without force, a queue with active jobs is refused in the same step that would begin deleting, so no
lease can appear between the check and the deletion. The first call pauses the queue (the meta
flag every claim reads), so no job is leased while later calls delete the rest; the last call deletes
meta itself. Id and token counters restart from Redis time (common.lua `reserve`), so numbers handed
out before are never handed out again. Trip records (<p>trip:*) and the follow mark are left to
expire. The schedule tick marks of the queue (<p>sched-ticks, written by schedules' add-tick-6.lua) go
with meta. Flow parents waiting for children go too, and the outbox of undelivered hand-overs (their
parents, on other queues, are not told) with the records set aside from it. A key it reads that was
edited by hand into another type (a state set, meta, an index) lists nothing: it is deleted first
(common.lua `index_call`), so such a queue can still be obliterated.
Returns: {0, remaining} (remaining = 1 while more calls are needed, 0 when the queue is gone),
         {-5, active count} (QUEUE_ACTIVE, nothing written), or {-6, 0, reason} (INVALID_INPUT).
Codes: 0 OK, -5 QUEUE_ACTIVE, -6 INVALID_INPUT
Events: none (the stream is deleted)
]]
--@include common

local prefix, force, limit = ARGV[1], ARGV[2], int_in(ARGV[3], 1, 10000)
if not limit or prefix == '' or (force ~= '0' and force ~= '1') then return {-6, 0, 'obliterate arguments'} end
local active = index_call('ZCARD', KEYS[4])
if force ~= '1' and active > 0 then return {-5, active} end
index_call('HSET', KEYS[1], 'paused', '1')

local budget = limit

-- Deletes up to `budget` jobs of `set` with their logs and idempotency keys; true when it is empty.
local function drop(set)
  local ids = index_call('ZRANGE', set, 0, budget - 1)
  for i = 1, #ids do
    drop_job(prefix, ids[i], job_call('HGET', prefix .. 'job:' .. ids[i], 'idem') or nil)
  end
  call_chunked('ZREM', set, nil, ids, 1)
  budget = budget - #ids
  return redis.call('EXISTS', set) == 0
end

for i = 2, 7 do
  if not drop(KEYS[i]) or budget <= 0 then return {0, 1} end
end
-- Flows (docs/flows.md): parents waiting for children, and undelivered hand-over records.
if not drop(prefix .. 'waiting-children') or budget <= 0 then return {0, 1} end
redis.call('DEL', prefix .. 'outbox', prefix .. 'outbox-bad')
-- Per-group and per-name sets: one member at a time, each removed from its index once empty.
for _, index in ipairs({{KEYS[14], 'gr:', 'gs:'}, {KEYS[15], 'hold:', nil}}) do
  while true do
    local name = index_call('SRANDMEMBER', index[1])
    if not name then break end
    if not drop(prefix .. index[2] .. name) then return {0, 1} end
    if index[3] then redis.call('DEL', prefix .. index[3] .. name, prefix .. 'grl:' .. name) end
    redis.call('SREM', index[1], name)
    if budget <= 0 then return {0, 1} end
  end
end
redis.call('DEL', prefix .. 'rlog', prefix .. 'cwa', prefix .. 'cwait', prefix .. 'cwake')
redis.call('DEL', KEYS[1], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15],
           prefix .. 'sched-ticks')
return {0, 0}
