--[[ renew-1: extend a claim while its holder still runs the claimed work (a long built-in run).
KEYS: 1 claims
ARGV: 1 id, 2 token of the claim, 3 now ms, 4 lease ms
Returns: 1 renewed (expiry now + lease, `since` kept); 0 the claim is gone or another claim holds
         the schedule (it lapsed and was taken over, or the schedule was reset): nothing written
]]
local claims = KEYS[1]
local id, token, now, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local c = redis.call('HGET', claims, id)
if not c or string.sub(c, 1, #token + 1) ~= token .. '|' then return 0 end
local since = string.match(c, '^[^|]*|(%d+)|%d+$') or string.format('%.0f', now)
redis.call('HSET', claims, id, token .. '|' .. since .. '|' .. string.format('%.0f', now + lease))
return 1
