--[[ retry-6: send a failed (dead-letter) or cancelled job back to waiting with fresh attempts.
KEYS: 1 meta, 2 ready, 3 failed, 4 cancelled, 5 events, 6 wake
ARGV: 1 prefix, 2 job id, 3 events maxlen
Returns: {code, state}: 0 OK, -1 NOT_FOUND, -3 WRONG_STATE
Codes: 0 OK, -1 NOT_FOUND, -3 WRONG_STATE, -6 INVALID_INPUT
Events: waiting (id, reason=manual)
]]
--@include common

local meta, ready, failed, cancelled, events, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, id, maxlen = ARGV[1], ARGV[2], ARGV[3]
if not id or id == '' or prefix == '' then return {-6, ''} end
local jk = prefix .. 'job:' .. id
local state = redis.call('HGET', jk, 'state')
if not state then return {-1, ''} end
if state ~= 'failed' and state ~= 'cancelled' then return {-3, state} end
redis.call('ZREM', state == 'failed' and failed or cancelled, id)
redis.call('PERSIST', jk)
redis.call('HDEL', jk, 'finished', 'cancel', 'token', 'stalls', 'lapses', 'result')
redis.call('HSET', jk, 'state', 'waiting', 'attempts', 0)
push_ready(meta, ready, jk, id)
wake(wake_key)
emit(events, maxlen, 'ev', 'waiting', 'id', id, 'reason', 'manual')
return {0, 'waiting'}
