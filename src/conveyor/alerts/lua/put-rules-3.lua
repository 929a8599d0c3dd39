--[[ put-rules-3: write alert rules of one source, optionally replacing all of that source's rules.
KEYS: 1 rules, 2 sources, 3 state
ARGV: 1 source ('code' or 'api'), 2 replace ('1': delete this source's rules not given), 3 count,
      then 2 per rule: id, rule JSON
Every id is checked before the first write: a rule of the other source is never overwritten.
A deleted rule's state goes, but for its count of episodes (state `{"episode": n}`), so a rule defined
again under the same id numbers its episodes on: notice ids and their delivery job ids never repeat.
Returns: {0, deleted} or {-1, id} when `id` belongs to the other source (nothing written)
]]
local rules, sources, state = KEYS[1], KEYS[2], KEYS[3]
local source, replace, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local given = {}
for i = 0, n - 1 do
  local id = ARGV[4 + 2 * i]
  local owner = redis.call('HGET', sources, id)
  if owner and owner ~= source then return {-1, id} end
  given[id] = true
end
local function forget_state(id)
  local raw = redis.call('HGET', state, id)
  if not raw then return end
  local ok, st = pcall(cjson.decode, raw)
  local episode = ok and type(st) == 'table' and tonumber(st['episode']) or 0
  if episode > 0 then
    redis.call('HSET', state, id, cjson.encode({episode = episode}))
  else
    redis.call('HDEL', state, id)
  end
end
local deleted = 0
if replace == '1' then
  local all = redis.call('HGETALL', sources)
  for i = 1, #all, 2 do
    if all[i + 1] == source and not given[all[i]] then
      redis.call('HDEL', rules, all[i])
      redis.call('HDEL', sources, all[i])
      forget_state(all[i])
      deleted = deleted + 1
    end
  end
end
for i = 0, n - 1 do
  local id, json = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  redis.call('HSET', rules, id, json)
  redis.call('HSET', sources, id, source)
end
return {0, deleted}
