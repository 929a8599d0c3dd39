--[[ step-1: store the result of a durable step of a running job (ctx.step), fenced by its lease.
KEYS: 1 the job's key
ARGV: 1 lease token, 2 step name, 3 result (JSON), 4 most steps a job may store
Results live in the job's hash (field "s:<name>"), so they go with the job and survive its retries.
Returns: 0 OK, -2 LEASE_LOST, or {-6, 0, reason} (INVALID_INPUT: too many steps)
Codes: 0 OK, -2 LEASE_LOST, -6 INVALID_INPUT
Events: none
A `nsteps` count that is not a count (edited by hand) is counted again from the stored steps, so the
bound still holds and the job still stores its steps.
]]
--@include common
local jk = KEYS[1]
local token, name, value, most = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if not name or name == '' or not value or not most then return {-6, 0, 'step arguments'} end
local f = redis.call('HMGET', jk, 'token', 'state', 'nsteps')
if f[1] ~= token or f[2] ~= 'active' then return -2 end
if redis.call('HEXISTS', jk, 's:' .. name) == 1 then return 0 end
local stored = tonumber(f[3])
if not stored or stored < 0 or stored % 1 ~= 0 or stored > MAX_COUNT then
  stored = 0
  for _, field in ipairs(redis.call('HKEYS', jk)) do
    if string.sub(field, 1, 2) == 's:' then stored = stored + 1 end
  end
end
if stored >= most then return {-6, 0, 'a job stores at most ' .. most .. ' steps'} end
redis.call('HSET', jk, 's:' .. name, value, 'nsteps', stored + 1)
return 0
