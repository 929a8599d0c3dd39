--[[ time-1: now in epoch ms on the clock of the node that holds the schedule keys.
KEYS: 1 any schedule key (read by nothing: it routes the call to the node of the `{schedules}` slot)
Returns: now ms
A plain TIME goes to whichever node the client picks; on a Cluster whose nodes' clocks differ, the
schedulers would then judge claim expiries by another clock than the one the scripts compare them to.
]]
local t = redis.call('TIME')
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
