--[[ extend-1: heartbeat; push the lease deadline of a worker's jobs and report their status.
KEYS: 1 active
ARGV: 1 prefix, 2 lease ms, then 2 fields per job: id, token
Returns: one status per job: 0 lease extended, 1 extended and cancellation requested,
         -2 lease lost (token changed or job no longer active), -1 job gone.
Codes: 0 OK, -1 NOT_FOUND, -2 LEASE_LOST
Events: none
]]
--@include common

local active, prefix = KEYS[1], ARGV[1]
local deadline = num(now_ms() + tonumber(ARGV[2]))
local out = {}
local zargs = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', prefix .. 'job:' .. id, 'token', 'state', 'cancel')
  if not f[2] then
    out[#out + 1] = -1
  elseif f[1] ~= token or f[2] ~= 'active' then
    out[#out + 1] = -2
  else
    zargs[#zargs + 1] = deadline
    zargs[#zargs + 1] = id
    out[#out + 1] = (f[3] == '1') and 1 or 0
  end
end
if #zargs > 0 then redis.call('ZADD', active, 'XX', unpack(zargs)) end
return out
