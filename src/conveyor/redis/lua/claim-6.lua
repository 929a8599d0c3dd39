--[[ claim-6: promote due delayed jobs, then lease up to `want` ready jobs to a worker.
KEYS: 1 meta, 2 ready, 3 delayed, 4 active, 5 events, 6 wake
ARGV: 1 prefix, 2 worker id, 3 lease ms, 4 want, 5 events maxlen
Returns: next_due_in_ms (-1 none; only meaningful when fewer than `want` were leased),
         then 6 fields per leased job: id, token, attempt, name, data, opts ('' = defaults).
Codes: 0 OK
Events: active (id, att, worker)
]]
--@include common
--@include claim

local k = {meta = KEYS[1], ready = KEYS[2], delayed = KEYS[3], active = KEYS[4], events = KEYS[5],
           wake = KEYS[6]}
return claim(k, ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), now_ms(), ARGV[5])
