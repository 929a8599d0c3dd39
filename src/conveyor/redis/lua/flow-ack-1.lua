--[[ flow-ack-1: delete delivered outbox records, each unless its child ended again meanwhile (a newer record).
KEYS: 1 the outbox hash
ARGV: pairs of field (child id, or "!<parent id>") and the record as delivered
Returns: how many were deleted
Codes: 0 OK
Events: none
]]
local deleted = 0
for i = 1, #ARGV - 1, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    deleted = deleted + 1
  end
end
return deleted
