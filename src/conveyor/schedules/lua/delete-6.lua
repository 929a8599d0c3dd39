--[[ delete-6: remove a schedule and everything kept about it.
KEYS: 1 defs, 2 versions, 3 next, 4 claims, 5 last, 6 changes
ARGV: 1 id, 2 changes maxlen
Returns: 1 removed, 0 no such schedule
]]
local id, maxlen = ARGV[1], ARGV[2]
local n = redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('HDEL', KEYS[4], id)
redis.call('HDEL', KEYS[5], id)
if n > 0 then redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, '*', 'op', 'delete', 'id', id) end
return n
