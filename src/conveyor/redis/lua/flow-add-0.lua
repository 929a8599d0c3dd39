--[[ flow-add-0: write the nodes of a flow tree that live in one slot (all of them on a standalone
server), all or nothing; docs/flows.md, "Creating a flow".
KEYS: any number: the meta key of each queue written (derived keys share its slot)
ARGV: 1 events maxlen, 2 node count, then 13 fields per node: queue prefix, id, name, data (JSON),
      opts (JSON or ''), priority, delay ms, group ('' = none), cost ('' = none), parent ref
      ("<queue>:<id>", '' = a root), child refs (space-separated "<queue>:<id>", '' = a leaf),
      on_child_failure ('' = fail, or fail|ignore|continue), parent ('1': the parent was written
      anew by an earlier call of this send, on a Cluster; '2': the parent, not in this call, holds
      this node's result (read by the client just before); a parent in the same call is known here)
A leaf is ready (or delayed) at once; a node with children waits in <p>waiting-children with
`pending` = its number of children. A node whose id exists with the same name and data is kept as it
is (the same flow sent again completes what a crash interrupted), and if it has ended it writes its
outbox record again (a parent written anew counts it; a parent that counted it already ignores it);
with other name, data or parent, or without the node's children: -4. A node that does not exist but
whose parent (kept, not written anew) holds its result completed and its record went (result_ttl=0,
retention): it is not written again, nor anything below it (status 0), so a flow sent again does not
run a child twice.
A flow sent again after its root (or a parent) was removed or cancelled runs afresh what that removal
cancelled: a node cancelled with its parent (`pcx`, includes/flow.lua) whose parent is written anew
is written anew itself (its old record and undelivered outbox record go). While that cancellation is
still under way (a node to write anew whose children's cancellation "!<id>" is still in its outbox,
or a node whose parent is written anew that is still active with a cancellation request from the old
parent), the tree is refused: -3, nothing written; sending it again once the mover has done succeeds.
The keys each queue's nodes write (meta, ready, delayed, waiting-children, cancelled, outbox, events;
the group keys a grouped ready leaf meets) are checked, once per queue (and group) and call, to hold their type before the first write: a key edited into
another type fails the call with WRONGTYPE naming it, nothing written (the client raises
SpoiledKeyError).
A node whose record holds another type than a hash (edited by hand) is no job, as in every script: it
is written anew in its place.
Returns: 2 entries per node: id, status (1 created, 0 existing)
         or {-4, id} (CONFLICT, nothing written) or {-3, id} (WRONG_STATE: a cancellation of an earlier
         run of this flow is under way, nothing written) or {-6, position, reason} (INVALID_INPUT, nothing written)
Codes: 0 OK, -3 WRONG_STATE, -4 CONFLICT, -6 INVALID_INPUT
Events: added (id, name), waiting-children (id)
]]
--@include common
--@include flow

local maxlen, count = ARGV[1], int_in(ARGV[2], 0, 10000)
local W = 13
if not count or #ARGV ~= 2 + count * W then return {-6, 0, 'flow arguments'} end
local POLICIES = {[''] = true, fail = true, ignore = true, continue = true}
local nodes = {}
for i = 1, count do
  local b = 3 + (i - 1) * W
  local n = {p = ARGV[b], id = ARGV[b + 1], name = ARGV[b + 2], data = ARGV[b + 3], opts = ARGV[b + 4],
             prio = int_in(ARGV[b + 5], -1000, 1000), delay = int_in(ARGV[b + 6], 0, MAX_MS),
             group = ARGV[b + 7], cost = ARGV[b + 8], parent = ARGV[b + 9], kids = ARGV[b + 10],
             policy = ARGV[b + 11], parent_new = ARGV[b + 12] == '1', counted = ARGV[b + 12] == '2'}
  if n.p == '' or not string.find(n.id, '^[%w%._:@/%+=%-]+$') or n.name == '' then
    return {-6, i, 'node ' .. i .. ': invalid id or name'}
  end
  if not n.prio or not n.delay or (n.cost ~= '' and not int_in(n.cost, 0, 1e12)) or not POLICIES[n.policy] then
    return {-6, i, 'node ' .. i .. ': an option is out of range'}
  end
  local queue = string.match(n.p, '{([^}]*)}')
  n.ref = queue and (queue .. ':' .. n.id) or ''
  nodes[i] = n
end
local byref = {}
for i = 1, count do byref[nodes[i].ref] = i end
-- The keys of each queue the nodes' writes meet, checked once per queue before the first write
-- (common.lua must_be): a key edited into another type fails the call, nothing written, instead of
-- at the node that meets it after others were written (a parent waiting for children never written).
local checked, groups_seen = {}, {}
for i = 1, count do
  local n = nodes[i]
  local p = n.p
  if not checked[p] then
    checked[p] = true
    must_be(p .. 'meta', 'hash')
    must_be(p .. 'ready', 'zset')
    must_be(p .. 'delayed', 'zset')
    must_be(p .. FLOW_WAITING, 'zset')
    must_be(p .. 'cancelled', 'zset')
    must_be(p .. 'outbox', 'hash')
    must_be(p .. 'events', 'stream')
    groups_seen[p] = {}
  end
  if n.group ~= '' and n.kids == '' and n.delay == 0 then  -- a ready leaf joins its group
    group_keys_must_be(p, n.group, groups_seen[p])
  end
end

local existing = {}
local fresh = {}  -- refs ("<queue>:<id>") of the nodes this call writes anew
local skip = {}  -- nodes not written: their parent holds their result (or they are below such a node)
for i = 1, count do
  local n = nodes[i]
  local jk = n.p .. 'job:' .. n.id
  -- (a record of another type, edited by hand, is no job: the node is written anew in its place)
  local f = job_call('HMGET', jk, 'name', 'data', 'parent', 'kids', 'state', 'result', 'error', 'pcx') or {}
  local parent_new = n.parent ~= '' and (n.parent_new or fresh[n.parent])
  local pi = n.parent ~= '' and byref[n.parent] or nil
  if not f[1] and n.parent ~= '' and not parent_new and n.ref ~= '' then
    if pi then
      local pn = nodes[pi]
      skip[i] = skip[pi] or (existing[pi] ~= nil
        and redis.call('HEXISTS', pn.p .. 'job:' .. pn.id, 'r:' .. n.ref) == 1)
    else
      skip[i] = n.counted
    end
  end
  if skip[i] then
    -- completed and counted by its parent, its record gone since: nothing to write
  elseif f[1] then
    -- the same node only if it has the same parent and (at least) the same children: a job outside
    -- this flow that happens to have the id, name and data would never report to this parent
    -- (its children first, reference by reference: "q:k-1" is not the start of "q:k-10 ...")
    local kids = f[4] or ''
    local after = string.sub(kids, #n.kids + 1, #n.kids + 1)
    if f[1] ~= n.name or f[2] ~= n.data or (f[3] or '') ~= n.parent
        or (n.kids ~= '' and (string.sub(kids, 1, #n.kids) ~= n.kids or (after ~= '' and after ~= ' '))) then
      return {-4, n.id}
    end
    if f[8] and parent_new and f[5] == 'cancelled' then
      f = nil  -- cancelled with the earlier run of its parent: written anew
    elseif f[8] and parent_new and f[5] == 'active' then
      return {-3, n.id}  -- its cancellation with the earlier run may still end it
    end
    existing[i] = f
  end
  if not existing[i] and not skip[i] then
    if n.kids ~= '' and redis.call('HEXISTS', n.p .. 'outbox', '!' .. n.id) == 1 then
      return {-3, n.id}  -- the earlier run's children are still being cancelled
    end
    local queue = string.match(n.p, '{([^}]*)}')
    if queue then fresh[queue .. ':' .. n.id] = true end
  end
end

local now = now_ms()
local created = num(now)
local out = {}
for i = 1, count do
  local n = nodes[i]
  if skip[i] then
    out[#out + 1] = n.id
    out[#out + 1] = 0
  elseif existing[i] then
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
    if redis.call('EXISTS', jk) == 1 then
      -- a node cancelled with the earlier run of its parent (or a record of another type): that
      -- run's record and hand-over go (a hand-over a mover holds already is refused by the new
      -- parent: flow-deliver-1.lua)
      redis.call('ZREM', n.p .. 'cancelled', n.id)
      redis.call('HDEL', n.p .. 'outbox', n.id)
      drop_job(n.p, n.id, job_call('HGET', jk, 'idem'))
    end
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
