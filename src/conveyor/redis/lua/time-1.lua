--[[ time-1: now in epoch ms on the clock of the node that holds KEYS[1]'s slot.
KEYS: 1 key whose node's clock is wanted (read by nothing: it only routes the call to that node)
ARGV: none
Codes: none
Returns: now ms
Events: none
A plain TIME goes to whichever node the client picks; on a Cluster whose nodes' clocks differ, a time
compared with a queue's, the ledger's, a limiter's, the alerts' or the schedules' keys must be the
clock of the node that holds them, the one their scripts read (redis/clock.py).
]]
local t = redis.call('TIME')
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
