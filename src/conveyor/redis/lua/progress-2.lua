--[[ progress-2: record a leased job's progress (fenced by its lease token).
KEYS: 1 events, 2 job hash
ARGV: 1 token, 2 progress JSON, 3 events maxlen, 4 job id
Returns: 0 OK, -1 NOT_FOUND, -2 LEASE_LOST
Codes: 0 OK, -1 NOT_FOUND, -2 LEASE_LOST
Events: progress (id, progress), or progress (id, size) when the JSON is over EVENT_VALUE_MAX bytes
        (the value is then on the record only)
]]
--@include common

local f = redis.call('HMGET', KEYS[2], 'token', 'state')
if not f[2] then return -1 end
if f[1] ~= ARGV[1] or f[2] ~= 'active' then return -2 end
redis.call('HSET', KEYS[2], 'progress', ARGV[2])
if #ARGV[2] <= EVENT_VALUE_MAX then
  emit(KEYS[1], ARGV[3], 'ev', 'progress', 'id', ARGV[4], 'progress', ARGV[2])
else
  emit(KEYS[1], ARGV[3], 'ev', 'progress', 'id', ARGV[4], 'size', #ARGV[2])
end
return 0
