--[[ flow-set-aside-2: move outbox records that cannot be delivered to the set-aside hash, in one step,
each unless its child ended again meanwhile (a newer record replaced it: that one is delivered).
KEYS: 1 the outbox hash, 2 the set-aside hash (<p>outbox-bad)
ARGV: 1 records kept in the set-aside hash at most (beyond that a record is only deleted), then
      pairs of field (child id, or "!<parent id>") and the record as read
The answer tells a call made again after its reply was lost (the mover keeps such records until it
knows) that the record was moved by the first call, so the mover logs and counts each record once.
Returns: one code per record: 1 moved now, 2 moved already (its field gone from the outbox, and the
         record kept as it was in the set-aside hash, or that hash full), 0 neither (delivered or
         replaced meanwhile: nothing done); or {-6, 0, reason} (INVALID_INPUT, nothing written)
Codes: 0 OK, -6 INVALID_INPUT
Events: none
]]
local outbox, bad = KEYS[1], KEYS[2]
local cap = tonumber(ARGV[1])
if not cap or cap < 0 or cap % 1 ~= 0 or #ARGV % 2 ~= 1 then return {-6, 0, 'set-aside arguments'} end
local out = {}
for i = 2, #ARGV - 1, 2 do
  local field, record = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', outbox, field)
  if cur == record then
    redis.call('HDEL', outbox, field)
    if redis.call('HLEN', bad) < cap then redis.call('HSET', bad, field, record) end
    out[#out + 1] = 1
  elseif not cur and (redis.call('HGET', bad, field) == record or redis.call('HLEN', bad) >= cap) then
    out[#out + 1] = 2
  else
    out[#out + 1] = 0
  end
end
return out
