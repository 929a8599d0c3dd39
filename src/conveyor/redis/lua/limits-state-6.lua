--[[ limits-state-6: a consistent snapshot of a queue's limits, as JSON (read only).
KEYS: 1 meta, 2 limits, 3 active, 4 gq, 5 gpark, 6 gcap
ARGV: 1 prefix, 2 max groups listed per kind (ready, parked, capped)
Returns: JSON: now, queue fields (raw), active, paused, lim, gwait, ready (ungrouped), groups
         {ready, parked, capped, known}, and a list of group entries with their raw fields.
Codes: 0 OK
Events: none
]]
--@include common

local meta, lk, active, gq, gpark, gcap = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, maxg = ARGV[1], tonumber(ARGV[2])
local m = redis.call('HMGET', meta, 'paused', 'lim', 'gwait')
local out = {
  now = now_ms(), active = redis.call('ZCARD', active), paused = m[1] == '1', lim = m[2] == '1',
  gwait = tonumber(m[3]) or 0, ready = redis.call('ZCARD', prefix .. 'ready'), queue = {},
  counts = {ready = redis.call('ZCARD', gq), parked = redis.call('ZCARD', gpark),
            capped = redis.call('SCARD', gcap), known = redis.call('SCARD', prefix .. 'groups')},
  groups = {},
}
local q = redis.call('HGETALL', lk)
for i = 1, #q, 2 do out.queue[q[i]] = q[i + 1] end

local function add_group(g, state, score)
  local h = redis.call('HGETALL', prefix .. 'gs:' .. g)
  local entry = {group = g, state = state, waiting = redis.call('ZCARD', prefix .. 'gr:' .. g), fields = {}}
  if score then entry.score = tonumber(score) end
  for i = 1, #h, 2 do entry.fields[h[i]] = h[i + 1] end
  out.groups[#out.groups + 1] = entry
end

local r = redis.call('ZRANGE', gq, 0, maxg - 1, 'WITHSCORES')
for i = 1, #r, 2 do add_group(r[i], 'ready', r[i + 1]) end
local pk = redis.call('ZRANGE', gpark, 0, maxg - 1, 'WITHSCORES')
for i = 1, #pk, 2 do add_group(pk[i], 'parked', pk[i + 1]) end
local cp = redis.call('SRANDMEMBER', gcap, maxg)
for i = 1, #cp do add_group(cp[i], 'capped', nil) end
return cjson.encode(out)
