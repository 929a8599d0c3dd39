--[[ advance-4: after enqueueing a pass's jobs, move the schedule to its next run and drop the claim.
KEYS: 1 next, 2 claims, 3 last, 4 changes
ARGV: 1 id, 2 token, 3 due ms the claim was for, 4 next run ms ('' = ended), 5 last-run JSON ('' = keep),
      6 changes maxlen
Returns: 1 advanced, 0 the claim was lost or the schedule changed meanwhile (nothing written)
]]
local nxt, claims, last, changes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, token, due, next_ms, info, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local c = redis.call('HGET', claims, id)
if not c or string.sub(c, 1, #token + 1) ~= token .. '|' then return 0 end
redis.call('HDEL', claims, id)
local score = redis.call('ZSCORE', nxt, id)
if not score or tonumber(score) ~= tonumber(due) then return 0 end
if next_ms == '' then
  redis.call('ZREM', nxt, id)
else
  redis.call('ZADD', nxt, next_ms, id)
end
if info ~= '' then redis.call('HSET', last, id, info) end
redis.call('XADD', changes, 'MAXLEN', '~', maxlen, '*', 'op', 'advance', 'id', id)
return 1
