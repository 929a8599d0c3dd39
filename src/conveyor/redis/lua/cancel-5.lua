--[[ cancel-5: cancel a job. Waiting/delayed/waiting-children jobs end cancelled at once (a flow
child's parent is told, a flow parent's children are cancelled: includes/flow.lua); an active job gets a
cooperative request (its worker sees it at the next heartbeat and cancels the handler).
KEYS: 1 ready, 2 delayed, 3 active, 4 cancelled, 5 events
ARGV: 1 prefix, 2 job id, 3 events maxlen, 4 (optional) the run of the parent whose cancellation
      this is ("K" outbox records, includes/flow.lua): kept as `pcx`, and in the error the parent sees
Returns: {code, state}: code 0 cancelled now, 1 cancellation requested (active), -1 NOT_FOUND,
         -3 WRONG_STATE (already finished; state says which)
Codes: 0 OK, -1 NOT_FOUND, -3 WRONG_STATE, -6 INVALID_INPUT
Events: cancelled (id), cancelling (id)
]]
--@include common
--@include flow
--@include cancel

local ready, delayed, active, cancelled, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, id, maxlen, run = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not id or id == '' or prefix == '' or (run and #run > 40) then return {-6, ''} end
local code, state = cancel_job(prefix, {ready = ready, delayed = delayed, cancelled = cancelled, events = events},
                               id, maxlen, run)
return {code, state}
