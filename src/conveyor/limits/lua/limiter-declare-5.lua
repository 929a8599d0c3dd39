--[[ limiter-declare-5: create or change a named limiter (idempotent: the same declaration again
changes nothing). A change of its parameters starts its rate dimensions rested and its adaptive limit
at the new maximum; slots held by running jobs stay held.
KEYS: 1 cfg, 2 st, 3 exp, 4 info, 5 use (see limiter.lua)
ARGV: 1 cfg JSON (as declared, compared to decide whether anything changed), then field/value pairs
Returns: {1} changed, {0} unchanged
Codes: 0 OK
]]
--@include common

local cur = redis.call('HGET', KEYS[1], 'cfg')
if cur == ARGV[1] then return {0} end
local held = redis.call('HGET', KEYS[2], 'held')
redis.call('DEL', KEYS[1], KEYS[1] .. ':log')
redis.call('HDEL', KEYS[2], 'req_tat', 'tin_tat', 'tout_tat', 'tok_tat', 'climit', 'succ', 'dec_at', 'blk')
local set = {'cfg', ARGV[1]}
for i = 2, #ARGV do set[#set + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(set))
if not held then redis.call('HSET', KEYS[2], 'held', '0') end
return {1}
