--[[ transition-5: record one rule's evaluation if its state is still the version the evaluator read,
together with the notices it produced (outbox + history), so a notice is decided exactly once.
KEYS: 1 rules, 2 state, 3 versions, 4 outbox, 5 history
ARGV: 1 id, 2 expected version, 3 state JSON, 4 history maxlen, 5 notice count,
      then 3 per notice: notice id, notice JSON (with the rule's channels, for delivery),
      history JSON (without them)
Returns: new version; -1 the state changed meanwhile (another evaluator won; nothing written);
         -2 the rule was deleted meanwhile (nothing written)
]]
local rules, state, versions, outbox, history = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, expected, json, maxlen, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('HEXISTS', rules, id) == 0 then return -2 end
local current = redis.call('HGET', versions, id) or '0'
if current ~= expected then return -1 end
redis.call('HSET', state, id, json)
local version = redis.call('HINCRBY', versions, id, 1)
for i = 0, n - 1 do
  local b = 6 + 3 * i
  redis.call('HSET', outbox, ARGV[b], ARGV[b + 1])
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'notice', ARGV[b + 2])
end
return version
