--[[ promote-5: make a delayed job ready now.
KEYS: 1 meta, 2 ready, 3 delayed, 4 events, 5 wake
ARGV: 1 prefix, 2 job id, 3 events maxlen
Returns: {code, state}: 0 OK, -1 NOT_FOUND, -3 WRONG_STATE
Codes: 0 OK, -1 NOT_FOUND, -3 WRONG_STATE, -6 INVALID_INPUT
Events: waiting (id, reason=promoted)
]]
--@include common

local meta, ready, delayed, events, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, id, maxlen = ARGV[1], ARGV[2], ARGV[3]
if not id or id == '' or prefix == '' then return {-6, ''} end
local jk = prefix .. 'job:' .. id
local state = job_call('HGET', jk, 'state')  -- (a record edited into another type is no job)
if not state then return {-1, ''} end
if state ~= 'delayed' then return {-3, state} end
redis.call('ZREM', delayed, id)
redis.call('HSET', jk, 'state', 'waiting')
push_ready(meta, ready, jk, id)
wake(wake_key)
emit(events, maxlen, 'ev', 'waiting', 'id', id, 'reason', 'promoted')
return {0, 'waiting'}
