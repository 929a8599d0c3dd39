--[[ extend-1: heartbeat; push the lease deadline of a worker's jobs and report their status.
KEYS: 1 active
ARGV: 1 prefix, 2 lease ms, then 3 fields per job: id, token, confirm ('1' = the worker has started
      running it: the run is marked confirmed, so a later lapse of this lease counts as a stall;
      '0' = extend only)
Any number of jobs (the ZADD goes in slices); every argument is checked, and every job record read,
before the first write.
While the queue's slot migrates, a job record may be out of reach: already moved away (the node
refuses the read: caught with pcall) or not moved here yet (it reads as missing). Such a lease is
still listed in `active`, so its deadline is pushed all the same (status 2): a migration never lets
leases lapse. Its token is checked again at the next heartbeat, once the record is reachable.
Returns: one status per job: 0 lease extended, 1 extended and cancellation requested,
         2 extended, its record out of reach for now (the slot migrates; nothing else is known),
         -2 lease lost (token changed or job no longer active), -1 job gone (or its record is not a
         hash: edited by hand);
         or {-6, 0, reason} when an argument is invalid (nothing written).
Codes: 0 OK, -1 NOT_FOUND, -2 LEASE_LOST, -6 INVALID_INPUT
Events: none
]]
--@include common

local active, prefix = KEYS[1], ARGV[1]
local lease_ms = int_in(ARGV[2], 1, MAX_MS)
if not lease_ms or prefix == '' or (#ARGV - 2) % 3 ~= 0 then return {-6, 0, 'extend arguments'} end
local deadline = num(now_ms() + lease_ms)
local out = {}
local zargs = {}
-- Every job record is read before the first write (a key that moved away while the queue's slot
-- migrates fails the script before it wrote anything).
local fields = {}
for i = 3, #ARGV, 3 do
  local f = redis.pcall('HMGET', prefix .. 'job:' .. ARGV[i], 'token', 'state', 'cancel')
  if f.err and string.sub(f.err, 1, 9) == 'WRONGTYPE' then
    f = false  -- edited by hand into another type: no job (gone), whatever `active` says
  elseif f.err then
    f = {}  -- moved away while the slot migrates: out of reach, like a missing record
  end
  fields[i] = f
end
for i = 3, #ARGV, 3 do
  local id, token = ARGV[i], ARGV[i + 1]
  local jk = prefix .. 'job:' .. id
  local f = fields[i]
  if not f then
    out[#out + 1] = -1
  elseif not f[2] then
    if redis.call('ZSCORE', active, id) then
      zargs[#zargs + 1] = deadline  -- still leased, its record out of reach: the slot migrates
      zargs[#zargs + 1] = id
      out[#out + 1] = 2
    else
      out[#out + 1] = -1
    end
  elseif f[1] ~= token or f[2] ~= 'active' then
    out[#out + 1] = -2
  else
    if ARGV[i + 2] == '1' then redis.call('HSET', jk, 'run', token) end
    zargs[#zargs + 1] = deadline
    zargs[#zargs + 1] = id
    out[#out + 1] = (f[3] == '1') and 1 or 0
  end
end
call_chunked('ZADD', active, 'XX', zargs, 2)
return out
