--[[ trim-finished-2: delete up to `limit` finished job records over a queue's retention policy.
KEYS: 1 meta, 2 the finished set (completed, failed or cancelled)
ARGV: 1 prefix (e.g. "cv:{q}:"), 2 policy ('completed' or 'failed'), 3 now ms, 4 limit
meta fields: <policy>_max_count, <policy>_max_age_ms ('-1' = no limit; when missing, completed
defaults to 100000 records / 24 h and failed to no limit, as in lua/includes/retention.lua).
Oldest records go first: those over the count, then those over the age. The job hash, its log and
an idempotency key still pointing at it are deleted together.
Returns: {deleted, more} where more = 1 when another call may find more to delete
]]
--@include common
--@include retention

local limit = tonumber(ARGV[4])
local deleted = trim(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[3]), ARGV[2], limit, true)
return {deleted, deleted >= limit and 1 or 0}
