--[[ delete-rule-4: remove one alert rule and its state (an alert firing for it ends silently).
Only the count of episodes stays (state `{"episode": n}`), so a rule defined again under the same id
numbers its episodes on: notice ids, and the ids of their delivery jobs, never repeat.
KEYS: 1 rules, 2 sources, 3 state, 4 versions
ARGV: 1 id
Returns: 1 removed, 0 no such rule
]]
local id = ARGV[1]
local n = redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
local raw = redis.call('HGET', KEYS[3], id)
if raw then
  local ok, st = pcall(cjson.decode, raw)
  local episode = ok and type(st) == 'table' and tonumber(st['episode']) or 0
  if episode > 0 then
    redis.call('HSET', KEYS[3], id, cjson.encode({episode = episode}))
  else
    redis.call('HDEL', KEYS[3], id)
  end
end
redis.call('HDEL', KEYS[4], id)
return n
