--[[ flow-ack-1: delete a delivered outbox record, unless the child ended again meanwhile (a newer record).
KEYS: 1 the outbox hash
ARGV: 1 field (child id, or "!<parent id>"), 2 the record as delivered
Returns: 1 deleted, 0 kept (a newer record or none)
Codes: 0 OK
Events: none
]]
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
