--[[ pause-3: set or clear a queue's paused flag; workers in every process stop or resume claiming.
KEYS: 1 meta, 2 events, 3 wake
ARGV: 1 '1' to pause or '0' to resume, 2 events maxlen
Returns: 0
Codes: 0 OK
Events: paused, resumed
]]
--@include common

if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'paused', '1')
  emit(KEYS[2], ARGV[2], 'ev', 'paused')
else
  redis.call('HDEL', KEYS[1], 'paused')
  emit(KEYS[2], ARGV[2], 'ev', 'resumed')
  wake(KEYS[3])
end
return 0
