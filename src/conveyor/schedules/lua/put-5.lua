--[[ put-5: write a schedule definition if its version is still the one the caller read.
KEYS: 1 defs, 2 versions, 3 next, 4 claims, 5 changes
ARGV: 1 id, 2 expected version ('0' = must not exist), 3 envelope JSON, 4 next run ms ('' = none),
      5 reset claim ('1' when the timing changed), 6 changes maxlen
Returns: {0, new version} or {-1, current version} on a version conflict (nothing written)
]]
local defs, versions, nxt, claims, changes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, expected, env, next_ms, reset, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local current = redis.call('HGET', versions, id) or '0'
if current ~= expected then return {-1, current} end
redis.call('HSET', defs, id, env)
local ver = redis.call('HINCRBY', versions, id, 1)
if next_ms == '' then
  redis.call('ZREM', nxt, id)
else
  redis.call('ZADD', nxt, next_ms, id)
end
if reset == '1' then redis.call('HDEL', claims, id) end
redis.call('XADD', changes, 'MAXLEN', '~', maxlen, '*', 'op', 'put', 'id', id)
return {0, ver}
