--[[ claim-3: claim due schedules for one scheduler, so one process fires each tick.
KEYS: 1 next, 2 claims, 3 defs
ARGV: 1 now ms, 2 token, 3 lease ms, 4 limit
Returns: {wake_at ms ('' = nothing scheduled), then 3 entries per claimed schedule: id, due ms, envelope}
wake_at is the earliest time this scheduler has something to do: the first future run, or the
expiry of another scheduler's claim on a due schedule (it takes over if that one died).
]]
local nxt, claims, defs = KEYS[1], KEYS[2], KEYS[3]
local now, token, lease, limit = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {''}
local wake = nil
local claimed = 0
local offset = 0
while claimed < limit do
  local page = redis.call('ZRANGE', nxt, offset, offset + limit - 1, 'WITHSCORES')
  if #page == 0 then break end
  offset = offset + #page / 2
  for i = 1, #page, 2 do
    local id, due = page[i], tonumber(page[i + 1])
    if due > now then
      if wake == nil or due < wake then wake = due end
      claimed = limit -- sorted: nothing later is due
      break
    end
    local c = redis.call('HGET', claims, id)
    local expiry = c and tonumber(string.match(c, '|(%d+)$')) or 0
    if c and expiry > now then
      if wake == nil or expiry < wake then wake = expiry end
    elseif claimed < limit then
      local env = redis.call('HGET', defs, id)
      if env then
        redis.call('HSET', claims, id, token .. '|' .. string.format('%.0f', now + lease))
        out[#out + 1] = id
        out[#out + 1] = page[i + 1]
        out[#out + 1] = env
        claimed = claimed + 1
      else
        redis.call('ZREM', nxt, id)
      end
    else
      wake = now
      break
    end
  end
  if #page < 2 * limit then break end
end
if wake ~= nil then out[1] = string.format('%.0f', wake) end
return out
