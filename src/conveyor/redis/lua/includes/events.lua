-- Events modes (docs/events.md), read from meta field `events` once per script run:
--   all (default, or unset): every event is written;
--   followed: the per-job lifecycle events (added, active, completed, progress, log) are written only
--             while <p>follow exists, a marker that readers (Queue.read_events/last_event_id: the SSE
--             endpoint, Job.wait/result, testing.drain) refresh with a TTL while they read;
--   none:     those events are never written.
-- Every other event (retrying, failed, cancelled, stalled, held, removed, paused, ...) is rare and
-- is always written: alerts and the dashboard timeline read them.
-- The stream is a notification channel, never the source of truth: job state lives in the records.

local HOT_EVENTS = {added = true, active = true, completed = true, progress = true, log = true}
local EVENTS_ON = nil
-- The meta field as a caller already read it ('' when unset), which saves the HGET below.
local EVENTS_MODE = nil

-- The keys are derived from the events key ('<p>events'), so the callers keep their key lists.
local function event_wanted(events, kind)
  if not HOT_EVENTS[kind] then return true end
  if EVENTS_ON == nil then
    local p = string.sub(events, 1, -7)
    local mode = EVENTS_MODE
    if mode == nil then mode = redis.call('HGET', p .. 'meta', 'events') end
    if mode == 'none' then
      EVENTS_ON = false
    elseif mode == 'followed' then
      EVENTS_ON = redis.call('EXISTS', p .. 'follow') == 1
    else
      EVENTS_ON = true
    end
  end
  return EVENTS_ON
end
