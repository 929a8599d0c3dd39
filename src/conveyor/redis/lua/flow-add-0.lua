--[[ flow-add-0: write the nodes of a flow tree that live in one slot (all of them on a standalone
server), all or nothing; docs/flows.md, "Creating a flow".
KEYS: any number: the meta key of each queue written (derived keys share its slot)
ARGV: 1 events maxlen, 2 node count, then 12 fields per node: queue prefix, id, name, data (JSON),
      opts (JSON or ''), priority, delay ms, group ('' = none), cost ('' = none), parent ref
      ("<queue>:<id>", '' = a root), child refs (space-separated "<queue>:<id>", '' = a leaf),
      on_child_failure ('' = fail, or fail|ignore|continue)
A leaf is ready (or delayed) at once; a node with children waits in <p>waiting-children with
`pending` = its number of children. A node whose id exists with the same name and data is kept as it
is (the same flow sent again completes what a crash interrupted), and if it has ended it writes its
outbox record again (a parent written anew counts it; a parent that counted it already ignores it);
with other name, data or parent, or without the node's children: -4.
Returns: 2 entries per node: id, status (1 created, 0 existing)
         or {-4, id} (CONFLICT, nothing written) or {-6, position, reason} (INVALID_INPUT, nothing written)
Codes: 0 OK, -4 CONFLICT, -6 INVALID_INPUT
Events: added (id, name), waiting-children (id)
]]
--@include common
--@include flow

local maxlen, count = ARGV[1], int_in(ARGV[2], 0, 10000)
local W = 12
if not count or #ARGV ~= 2 + count * W then return {-6, 0, 'flow arguments'} end
local POLICIES = {[''] = true, fail = true, ignore = true, continue = true}
local nodes = {}
for i = 1, count do
  local b = 3 + (i - 1) * W
  local n = {p = ARGV[b], id = ARGV[b + 1], name = ARGV[b + 2], data = ARGV[b + 3], opts = ARGV[b + 4],
             prio = int_in(ARGV[b + 5], -1000, 1000), delay = int_in(ARGV[b + 6], 0, MAX_MS),
             group = ARGV[b + 7], cost = ARGV[b + 8], parent = ARGV[b + 9], kids = ARGV[b + 10],
             policy = ARGV[b + 11]}
  if n.p == '' or not string.find(n.id, '^[%w%._:@/%+=%-]+$') or n.name == '' then
    return {-6, i, 'node ' .. i .. ': invalid id or name'}
  end
  if not n.prio or not n.delay or (n.cost ~= '' and not int_in(n.cost, 0, 1e12)) or not POLICIES[n.policy] then
    return {-6, i, 'node ' .. i .. ': an option is out of range'}
  end
  nodes[i] = n
end

local existing = {}
for i = 1, count do
  local n = nodes[i]
  local f = redis.call('HMGET', n.p .. 'job:' .. n.id, 'name', 'data', 'parent', 'kids', 'state', 'result', 'error')
  if f[1] then
    -- the same node only if it has the same parent and (at least) the same children: a job outside
    -- this flow that happens to have the id, name and data would never report to this parent
    local kids = f[4] or ''
    if f[1] ~= n.name or f[2] ~= n.data or (f[3] or '') ~= n.parent
        or (n.kids ~= '' and string.sub(kids, 1, #n.kids) ~= n.kids) then
      return {-4, n.id}
    end
    existing[i] = f
  end
end

local now = now_ms()
local created = num(now)
local out = {}
for i = 1, count do
  local n = nodes[i]
  if existing[i] then
    -- an existing child that has ended reports its end again: its parent may be new (the flow sent
    -- again after the parent was removed or expired); a parent that counted it ignores the record
    local f = existing[i]
    if n.parent ~= '' then
      if f[5] == 'completed' then
        flow_ended(n.p, n.id, n.parent, 'C', f[6] or 'null')
      elseif f[5] == 'failed' or f[5] == 'cancelled' then
        flow_ended(n.p, n.id, n.parent, 'F',
                   f[7] or cjson.encode({type = 'Cancelled', message = 'the child job was cancelled'}))
      end
    end
    out[#out + 1] = n.id
    out[#out + 1] = 0
  else
    local jk = n.p .. 'job:' .. n.id
    local meta, ready = n.p .. 'meta', n.p .. 'ready'
    local fields = {'name', n.name, 'data', n.data, 'ts', created}
    if n.opts ~= '' then fields[#fields + 1] = 'opts'; fields[#fields + 1] = n.opts end
    if n.prio ~= 0 then fields[#fields + 1] = 'prio'; fields[#fields + 1] = n.prio end
    if n.group ~= '' then fields[#fields + 1] = 'group'; fields[#fields + 1] = n.group end
    if n.cost ~= '' then fields[#fields + 1] = 'cost'; fields[#fields + 1] = n.cost end
    if n.parent ~= '' then fields[#fields + 1] = 'parent'; fields[#fields + 1] = n.parent end
    local events = n.p .. 'events'
    if n.kids ~= '' then
      local pending = 0
      for _ in string.gmatch(n.kids, '%S+') do pending = pending + 1 end
      fields[#fields + 1] = 'kids'; fields[#fields + 1] = n.kids
      fields[#fields + 1] = 'pending'; fields[#fields + 1] = pending
      if n.policy ~= '' then fields[#fields + 1] = 'ocf'; fields[#fields + 1] = n.policy end
      fields[#fields + 1] = 'state'; fields[#fields + 1] = FLOW_WAITING
      redis.call('HSET', jk, unpack(fields))
      redis.call('ZADD', n.p .. FLOW_WAITING, created, n.id)
      if n.parent == '' then incr(meta, 'flows_started', 1) end
      emit(events, maxlen, 'ev', 'added', 'id', n.id, 'name', n.name)
      emit(events, maxlen, 'ev', 'waiting-children', 'id', n.id)
    else
      if n.delay > 0 then
        fields[#fields + 1] = 'state'; fields[#fields + 1] = 'delayed'
        redis.call('HSET', jk, unpack(fields))
        push_delayed(n.p .. 'delayed', n.p .. 'wake', n.id, now + n.delay)
      else
        fields[#fields + 1] = 'state'; fields[#fields + 1] = 'waiting'
        redis.call('HSET', jk, unpack(fields))
        push_ready(meta, ready, jk, n.id)
        wake(n.p .. 'wake')
      end
      emit(events, maxlen, 'ev', 'added', 'id', n.id, 'name', n.name)
    end
    out[#out + 1] = n.id
    out[#out + 1] = 1
  end
end
return out
