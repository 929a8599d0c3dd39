--[[ flow-cancel-kids-1: cancel a batch of children of a cancelled or removed parent that live on one
queue ("K" outbox records, includes/flow.lua), as cancel-5 cancels each: waiting, delayed and
waiting-children ones at once, active ones cooperatively; each is marked `pcx` = run. One call per
batch instead of one per child; a child that has ended (or is gone) is left as it is, so the same call
made again (its reply lost) changes nothing more.
KEYS: 1 the children's queue meta (the other keys are derived from the prefix: same slot)
ARGV: 1 queue prefix, 2 events maxlen, 3 run of the parent (its creation stamp, at most 40 chars),
      4 count N (at most 1000), then N child ids
Every child's key is looked at before the first write: a key holding something other than a hash
(not a job's record) is skipped (code 3), the others are cancelled.
Returns: one code per child: 0 cancelled now, 1 cancellation requested (active), 2 nothing to do (it
         has ended, or does not exist), 3 skipped (its key is not a job's record);
         or {-6, 0, reason} (INVALID_INPUT, nothing written)
Codes: 0 OK, -6 INVALID_INPUT
Events: cancelled (id), cancelling (id)
]]
--@include common
--@include flow
--@include cancel

local p, maxlen, run, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if not p or p == '' or not run or #run > 40 or not n or n < 1 or n > 1000 or n % 1 ~= 0 or #ARGV ~= 4 + n then
  return {-6, 0, 'cancel-kids arguments'}
end
local usable = {}
for i = 1, n do
  local id = ARGV[4 + i]
  if id == '' then return {-6, i, 'child id ' .. i} end
  local t = redis.call('TYPE', p .. 'job:' .. id)
  t = type(t) == 'table' and t.ok or t
  usable[i] = t == 'hash' or t == 'none'
end
local k = {ready = p .. 'ready', delayed = p .. 'delayed', cancelled = p .. 'cancelled', events = p .. 'events'}
local out = {}
for i = 1, n do
  if not usable[i] then
    out[i] = 3
  else
    local code = cancel_job(p, k, ARGV[4 + i], maxlen, run)
    out[i] = (code == 0 or code == 1) and code or 2
  end
end
return out
