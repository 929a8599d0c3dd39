--[[ log-3: append a line to a leased job's log (fenced by its lease token), keeping the last N lines.
KEYS: 1 events, 2 job hash, 3 job log list
ARGV: 1 token, 2 line, 3 max lines, 4 events maxlen, 5 job id, 6 the line's first bytes for the event
      (at most EVENT_VALUE_MAX, cut on a character boundary by the caller)
Returns: 0 OK, -1 NOT_FOUND, -2 LEASE_LOST
Codes: 0 OK, -1 NOT_FOUND, -2 LEASE_LOST
Events: log (id, line), or log (id, line = its first bytes, size) when the line is over EVENT_VALUE_MAX
        bytes (the whole line is in the job's log)
]]
--@include common

local f = redis.call('HMGET', KEYS[2], 'token', 'state')
if not f[2] then return -1 end
if f[1] ~= ARGV[1] or f[2] ~= 'active' then return -2 end
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
if #ARGV[2] <= EVENT_VALUE_MAX then
  emit(KEYS[1], ARGV[4], 'ev', 'log', 'id', ARGV[5], 'line', ARGV[2])
else
  local head = ARGV[6] or ''
  if #head > EVENT_VALUE_MAX then head = '' end
  emit(KEYS[1], ARGV[4], 'ev', 'log', 'id', ARGV[5], 'line', head, 'size', #ARGV[2])
end
return 0
