--[[ delete-rule-4: remove one alert rule and its state (an alert firing for it ends silently).
KEYS: 1 rules, 2 sources, 3 state, 4 versions
ARGV: 1 id
Returns: 1 removed, 0 no such rule
]]
local id = ARGV[1]
local n = redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('HDEL', KEYS[3], id)
redis.call('HDEL', KEYS[4], id)
return n
