--[[ release-2: a closing scheduler hands back the claim of a built-in run it stopped, so another
scheduler takes the run over now instead of after the lease.
KEYS: 1 claims, 2 changes
ARGV: 1 id, 2 token of the claim, 3 now ms, 4 changes maxlen
Returns: 1 released; 0 the claim is gone or another claim holds the schedule: nothing written
The claim is marked lapsed now (its `since` kept, so the takeover judges lateness as a takeover
does), never deleted, and only while it carries this claim's own token: a claim another scheduler
took over meanwhile is left alone. A change entry wakes the schedulers waiting for its expiry.
]]
local claims, changes = KEYS[1], KEYS[2]
local id, token, now, maxlen = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local c = redis.call('HGET', claims, id)
if not c or string.sub(c, 1, #token + 1) ~= token .. '|' then return 0 end
local since = string.match(c, '^[^|]*|(%d+)|%d+$') or string.format('%.0f', now)
redis.call('HSET', claims, id, token .. '|' .. since .. '|' .. string.format('%.0f', now))
redis.call('XADD', changes, 'MAXLEN', '~', maxlen, '*', 'op', 'release', 'id', id)
return 1
