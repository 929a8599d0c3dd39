--[[ set-limits-7: change the limits of a queue or of one of its groups; takes effect at the next claim.
KEYS: 1 meta, 2 target hash (limits, or gs:<group>), 3 gq, 4 gpark, 5 gcap, 6 wake, 7 events
ARGV: 1 prefix, 2 events maxlen, 3 group ('' = the queue), 4 count of fields to delete,
      then those field names, then field/value pairs to set
Every parked group is put back in the rotation (the next claim parks it again if it must wait), and
idle workers are woken, so a raised limit is used at once.
Returns: 0
Codes: 0 OK
Events: limits (group)
]]
--@include common

local meta, target, gq, gpark, gcap, wake_key, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6], KEYS[7]
local prefix, maxlen, group, ndel = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local del = {}
for i = 1, ndel do del[#del + 1] = ARGV[4 + i] end
if #del > 0 then redis.call('HDEL', target, unpack(del)) end
local set = {}
for i = 5 + ndel, #ARGV do set[#set + 1] = ARGV[i] end
if #set > 0 then redis.call('HSET', target, unpack(set)) end
if group ~= '' then redis.call('SADD', prefix .. 'groups', group) end

local parked = redis.call('ZRANGE', gpark, 0, -1)
local capped = redis.call('SMEMBERS', gcap)
redis.call('DEL', gpark, gcap)
for _, list in ipairs({parked, capped}) do
  for i = 1, #list do
    if redis.call('ZCARD', prefix .. 'gr:' .. list[i]) > 0 then group_join(prefix, meta, list[i]) end
  end
end
redis.call('HSET', meta, 'lim', '1')
redis.call('LPUSH', wake_key, '1')
redis.call('LTRIM', wake_key, 0, 0)
emit(events, maxlen, 'ev', 'limits', 'group', group)
return 0
