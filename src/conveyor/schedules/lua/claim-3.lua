--[[ claim-3: claim due schedules for one scheduler, so one process fires each tick.
KEYS: 1 next, 2 claims, 3 defs
ARGV: 1 now ms, 2 token, 3 lease ms, 4 limit, 5 grace ms, 6 the built-in schedule ids this scheduler
      runs, space-separated (absent: every schedule is claimed)
Returns: {wake_at ms ('' = nothing scheduled), then 4 entries per claimed schedule: id, due ms, envelope,
         since ms}
wake_at is the earliest time this scheduler has something to do: the first future run, or the
expiry of another scheduler's claim on a due schedule (it takes over if that one died).
A claim is stored as "token|since|expiry". `since` is when live schedulers first claimed this run:
now for a fresh claim; carried over when a lapsed claim is taken over within the grace of its
expiry (a live scheduler was waiting for it), so the ticks it covers are not judged "missed".
A built-in schedule (kind other than "job") that this scheduler does not run is left to the others:
not claimed, and no reason to wake.
]]
local nxt, claims, defs = KEYS[1], KEYS[2], KEYS[3]
local now, token, lease, limit = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local grace = tonumber(ARGV[5])
local runs = nil
if ARGV[6] then
  runs = {}
  for id in string.gmatch(ARGV[6], '%S+') do runs[id] = true end
end
local function runnable(id, env)
  if runs == nil or runs[id] then return true end
  local ok, v = pcall(cjson.decode, env)
  if not ok or type(v) ~= 'table' or type(v.schedule) ~= 'table' then return true end
  local kind = v.schedule.kind
  return kind == nil or kind == 'job'
end
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
      if env and not runnable(id, env) then
        -- another scheduler's built-in: skipped
      elseif env then
        local since = now
        local held_since = c and tonumber(string.match(c, '^[^|]*|(%d+)|%d+$'))
        if held_since and now - expiry <= grace then since = held_since end
        redis.call('HSET', claims, id,
          token .. '|' .. string.format('%.0f', since) .. '|' .. string.format('%.0f', now + lease))
        out[#out + 1] = id
        out[#out + 1] = page[i + 1]
        out[#out + 1] = env
        out[#out + 1] = string.format('%.0f', since)
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
