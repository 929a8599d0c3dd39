--[[ flow-adopt-2: a running job takes new children (dynamic children), before they are written.
KEYS: 1 the job's key, 2 its queue's meta (flows_started when a root job adopts its first children)
ARGV: 1 lease token, 2 on_child_failure ('' = keep), 3 child count, then the child refs ("<queue>:<id>")
Children already adopted are skipped, so the same call made again (a re-run) adds nothing. A job
holds at most 10000 children (as a flow holds at most 10000 jobs), over all its calls.
Returns: the number of children added, -2 LEASE_LOST, or {-6, 0, reason} (INVALID_INPUT, nothing written)
Codes: -2 LEASE_LOST, -6 INVALID_INPUT
Events: none
A `pending` count that is not a count (edited by hand) is counted again from the children that have
neither a result nor an error; a spoiled `flows_started` starts again (common.lua `incr`).
]]
--@include common
--@include flow
local jk, meta = KEYS[1], KEYS[2]
local token, policy, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local POLICIES = {[''] = true, fail = true, ignore = true, continue = true}
if not n or n < 0 or n > 10000 or n % 1 ~= 0 or #ARGV ~= 3 + n or not POLICIES[policy] then
  return {-6, 0, 'adopt arguments'}
end
local f = redis.call('HMGET', jk, 'token', 'state', 'kids', 'parent')
if f[1] ~= token or f[2] ~= 'active' then return -2 end
local known = {}
local kids = f[3] or ''
local have = 0
for ref in string.gmatch(kids, '%S+') do
  known[ref] = true
  have = have + 1
end
local added = {}
for i = 4, 3 + n do
  local ref = ARGV[i]
  if ref == '' or string.find(ref, '%s') then return {-6, 0, 'child ref'} end
  if not known[ref] then
    known[ref] = true
    added[#added + 1] = ref
  end
end
if have + #added > 10000 then
  return {-6, 0, 'a job holds at most 10000 children (it has ' .. have .. ', ' .. #added .. ' more were added)'}
end
if #added > 0 then
  local joined = table.concat(added, ' ')
  redis.call('HSET', jk, 'kids', kids == '' and joined or (kids .. ' ' .. joined))
  flow_pending_add(jk, #added)
  if kids == '' and not f[4] then incr(meta, 'flows_started', 1) end
end
if policy ~= '' then redis.call('HSET', jk, 'ocf', policy) end
return #added
