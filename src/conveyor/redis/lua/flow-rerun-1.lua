--[[ flow-rerun-1: send a parent back to waiting from waiting-children when children it waits for were
never written: it adopted them (flow-adopt-2.lua) and ended (stalled, killed) before writing them
(flow-add-0.lua), then was retried. The children live in other slots: the client looked them up just
before (no record, no hand-over record in their queue's outbox) and names those it found missing.
The parent runs again and its handler adds them again (the same ids: the call writes only the
missing ones); `pending` is left as it is, so the children that do exist are still counted.
Only a parent that has run (`started`) is sent back: the children of one that never ran were given
with its tree (a tree whose write was cut short is completed by sending it again).
KEYS: 1 the parent's queue meta (the parent's other keys are derived from the prefix: same slot)
ARGV: 1 parent queue prefix, 2 parent id, 3 events maxlen, 4 count N (at most 1000), then N child refs
      ("<queue>:<id>") found missing
A ref counts as missing only if it is among the parent's children (`kids`) and the parent has neither
its result nor its error now (one delivered since the client looked is not missing).
Returns: 1 sent back to waiting, 0 left as it is (not in waiting-children, never ran, or no named
         child is still missing); or {-6, 0, reason} (INVALID_INPUT, nothing written)
Codes: 0 OK, -6 INVALID_INPUT
Events: waiting (id, reason=unwritten)
]]
--@include common
--@include flow

local meta = KEYS[1]
local p, pid, maxlen, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if not p or p == '' or not pid or pid == '' or not n or n < 1 or n > 1000 or n % 1 ~= 0 or #ARGV ~= 4 + n then
  return {-6, 0, 'rerun arguments'}
end
local jk = p .. 'job:' .. pid
local f = redis.call('HMGET', jk, 'state', 'started', 'kids')
if f[1] ~= FLOW_WAITING or not f[2] then return 0 end
local kids = ' ' .. (f[3] or '') .. ' '
local missing = false
for i = 5, 4 + n do
  local ref = ARGV[i]
  if ref ~= '' and not string.find(ref, '%s') and string.find(kids, ' ' .. ref .. ' ', 1, true)
      and redis.call('HEXISTS', jk, 'r:' .. ref) == 0 and redis.call('HEXISTS', jk, 'e:' .. ref) == 0 then
    missing = true
    break
  end
end
if not missing then return 0 end
redis.call('ZREM', p .. FLOW_WAITING, pid)
redis.call('HSET', jk, 'state', 'waiting')
push_ready(meta, p .. 'ready', jk, pid)
wake(p .. 'wake')
emit(p .. 'events', maxlen, 'ev', 'waiting', 'id', pid, 'reason', 'unwritten')
return 1
