-- Fair sharing of a queue's fleet-wide concurrency cap between worker processes (limits path).
-- Needs common.lua. Keys (queue prefix p):
--   <p>cwa    hash  worker id -> jobs of this queue it holds under the cap (job field `cw` = worker)
--   <p>cwait  zset  workers that asked for more than they got, scored by the ms time they last asked
--   <p>cwake  string  set for CAP_WAKE_MS after a fairness wake-up (bounds wake-ups to 1 per 20 ms)
-- While other workers wait, a worker may hold at most ceil(cap / waiting workers incl. itself) jobs;
-- a claim that leaves free slots it may not take wakes an idle worker. A waiter not heard of for
-- CAP_WAIT_STALE_MS (a dead process) stops counting; a waiter with work in sight re-asks every
-- CAP_WAIT_POLL_MS so it stays counted. A `cwa` count that is not a count (edited by hand) starts
-- again (common.lua `incr`) rather than failing every claim and finish of the queue.
local CAP_WAIT_STALE_MS = 10000
local CAP_WAIT_POLL_MS = 1000
local CAP_WAKE_MS = 20

-- How many of `want` jobs `worker` may take now, given `free` slots under a cap of `conc`.
local function cap_room(p, worker, conc, free, want, now)
  if free <= 0 or want <= 0 then return 0 end
  local cw = p .. 'cwait'
  redis.call('ZREMRANGEBYSCORE', cw, '-inf', now - CAP_WAIT_STALE_MS)
  local others = redis.call('ZCARD', cw)
  if redis.call('ZSCORE', cw, worker) then others = others - 1 end
  local room = math.min(free, want)
  if others > 0 then
    local fair = math.ceil(conc / (others + 1))
    local mine = tonumber(redis.call('HGET', p .. 'cwa', worker)) or 0
    room = math.min(room, math.max(0, fair - mine))
  end
  return room
end

-- After a capped claim leased `ids`: count them for the worker, note whether it still waits, and
-- wake another worker when slots stay free that this one may not take. True when the worker
-- should ask again within CAP_WAIT_POLL_MS (it waits and work is in sight).
local function cap_after(k, p, worker, want, ids, free, more, now)
  if #ids > 0 then
    for i = 1, #ids do redis.call('HSET', p .. 'job:' .. ids[i], 'cw', worker) end
    incr(p .. 'cwa', worker, #ids)
  end
  local cw = p .. 'cwait'
  if #ids < want then
    redis.call('ZADD', cw, num(now), worker)
    redis.call('PEXPIRE', cw, CAP_WAIT_STALE_MS * 2)
  elseif want > 0 then
    redis.call('ZREM', cw, worker)
  end
  if more and free - #ids > 0 and redis.call('SET', p .. 'cwake', '1', 'PX', CAP_WAKE_MS, 'NX') then
    wake(k.wake)
  end
  return more and #ids < want
end

-- A job counted under the cap left `active` (finish, stalled sweep): its worker's slot is free.
-- `dead`: the sweep found the lease expired, so that worker no longer waits for slots either.
local function cap_release(p, jk, worker, dead)
  redis.call('HDEL', jk, 'cw')
  if dead then redis.call('ZREM', p .. 'cwait', worker) end
  local key = p .. 'cwa'
  if incr(key, worker, -1) <= 0 then redis.call('HDEL', key, worker) end
end
