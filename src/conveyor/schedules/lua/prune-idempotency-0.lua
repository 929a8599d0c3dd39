--[[ prune-idempotency-0: delete idempotency keys whose job no longer exists (its record expired or
was trimmed), so they stop pinning a key to a vanished job until their TTL runs out, and keys edited
by hand into another type (they name no job).
KEYS: any number of idempotency keys of one queue (one slot)
ARGV: 1 prefix (e.g. "cv:{q}:")
Returns: how many keys were deleted
]]
local prefix = ARGV[1]
local n = 0
for i = 1, #KEYS do
  local id = redis.pcall('GET', KEYS[i])
  local gone
  if type(id) == 'table' then  -- a key edited by hand into another type names no job
    if not (id.err and string.sub(id.err, 1, 9) == 'WRONGTYPE') then error(id) end
    gone = true
  else
    gone = id and redis.call('EXISTS', prefix .. 'job:' .. id) == 0
  end
  if gone then
    redis.call('DEL', KEYS[i])
    n = n + 1
  end
end
return n
