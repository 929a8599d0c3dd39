--[[ add-tick-6: enqueue the jobs of a schedule's ticks at most once, even after their records are gone.
The body of the core add script (add-5) runs inside a guard: a per-queue hash remembers, for each
schedule, the last tick whose jobs were enqueued; ticks up to it are never enqueued again, so a
scheduler that crashed between enqueueing and advancing its schedule cannot make a second job for a
tick whose job already ran and was deleted (result_ttl=0, retention, purge). Guard and add are one
script, so there is no moment where one is written without the other.
The whole batch must lie after the recorded tick: a batch that starts at or before it (a takeover
firing the crashed pass's ticks again together with later ones) is refused as a whole, and the
caller drops the ticks up to the recorded one and sends the rest.
KEYS: 1-5 as add-5 (meta, ready, delayed, events, wake), 6 ticks (hash: schedule id -> last tick ms)
ARGV: as add-5 (the batch of tick jobs, oldest first), then: schedule id, tick ms of the batch's
      first job, tick ms of its last job, '1' to record the tick even when add-5 answers a conflict
      (one tick whose job exists with other data: the tick has its job), '0' to leave it (the
      caller retries tick by tick)
Returns: {} when the batch's first tick is at or before the recorded one (nothing written);
         otherwise add-5's reply.
Codes: as add-5 (0 OK, -4 CONFLICT, -6 INVALID_INPUT: nothing written, the tick not recorded)
Events: as add-5
]]
local tick_hash = KEYS[6]
-- The guard's own arguments come last; they are taken off ARGV so the add sees exactly its own.
local tick_mark_conflict = table.remove(ARGV)
local tick_ms = table.remove(ARGV)
local tick_first = table.remove(ARGV)
local tick_schedule = table.remove(ARGV)
if not tick_schedule or tick_schedule == '' or not tonumber(tick_ms) or not tonumber(tick_first)
  or tonumber(tick_first) > tonumber(tick_ms) then
  return {-6, 0, 'tick arguments'}
end
local tick_last = redis.call('HGET', tick_hash, tick_schedule)
if tick_last and tonumber(tick_first) <= tonumber(tick_last) then return {} end

local function add_jobs()
--@add-5
end

local reply = add_jobs()
if reply[1] == -6 then return reply end
if reply[1] ~= -4 or tick_mark_conflict == '1' then
  redis.call('HSET', tick_hash, tick_schedule, tick_ms)
end
return reply
