--[[ recover-stalled-8: return jobs whose lease expired to waiting, or fail those that lapse too often.
KEYS: 1 meta, 2 ready, 3 active, 4 failed, 5 cancelled, 6 events, 7 wake, 8 holds
ARGV: 1 prefix, 2 max stalls, 3 max lapses, 4 batch limit, 5 events maxlen
An expired lease whose run a heartbeat confirmed (job field `run` = its token) is a stall: the job's
worker died or froze while running it; `stalls` counts them and a job with more than `max stalls`
fails (error type Stalled). A lease that expired before any heartbeat confirmed its run (the worker
died before or right after starting it, or a trip's reply was lost) is a lapse: `lapses` counts them
and only more than `max lapses` (a generous bound, so a job that kills its worker at once cannot
loop for ever) fails the job. Neither uses an attempt; the old token is cleared so a late write from
the lost worker is rejected. A job whose cancellation was requested ends cancelled instead. A flow's
root ended here is counted in the meta's flows_failed (cancelled included), as finish-10 counts it.
An expired id whose record is out of reach (the queue's slot migrates: moved away, or not moved here
yet) is left in `active` a minute longer and looked at again then; an id whose record is no longer
`active` only leaves the set. A record that reads as missing at ORPHAN_LOOKS looks in a row (a
minute apart) is gone, not in transit (its record was deleted under the lease): its id is an orphan,
removed from `active` and counted once; so is, at the first look, one whose record is not a hash
(edited by hand). The looks are counted in the score's fraction (k/16; lease deadlines are whole
milliseconds), so no other key is needed.
Returns: {recovered, failed, held, orphans} (held: jobs waiting for a worker with their handler);
         or {-6, 0, reason} when an argument is invalid (nothing written).
Codes: 0 OK, -6 INVALID_INPUT
Events: stalled (id, stalls, lapses), failed (id, error), cancelled (id)
]]
--@include common
--@include flow
--@include retention
--@include capshare

local meta, ready, active, failed, cancelled, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local wake_key = KEYS[7]
local prefix, maxlen = ARGV[1], ARGV[5]
local max_stalls, max_lapses = int_in(ARGV[2], 0, 1000000), int_in(ARGV[3], 0, 1000000)
local limit = int_in(ARGV[4], 1, 10000)
if not (max_stalls and max_lapses and limit) or prefix == '' then return {-6, 0, 'sweep arguments'} end
local now = now_ms()
local stamp = num(now)
local ORPHAN_LOOKS = 5
local scored = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local expired, scores = {}, {}
for i = 1, #scored, 2 do
  expired[#expired + 1] = scored[i]
  scores[#scores + 1] = tonumber(scored[i + 1]) or 0
end
local recovered, dead, orphans = 0, 0, 0
-- Every job record is read before the first write (a key that moved away while the queue's slot
-- migrates fails the script before it wrote anything).
-- A record out of reach while the slot migrates (moved away: the read is refused, caught here; or not
-- moved here yet: it reads as missing) is left alone, its id kept in `active` a minute longer.
local fields = {}
local unreachable = {}
for i = 1, #expired do
  local f = redis.pcall('HMGET', prefix .. 'job:' .. expired[i], 'state', 'token', 'run', 'group', 'cancel',
                        'stalls', 'lapses', 'cw', 'attempts')
  if f.err and string.sub(f.err, 1, 9) == 'WRONGTYPE' then
    f = {}
    orphans = orphans + 1  -- edited into another type: no job, and no migration makes it one
  elseif f.err then
    f = {}
    unreachable[#unreachable + 1] = num(now + 60000)
    unreachable[#unreachable + 1] = expired[i]
  elseif not f[1] then
    f = {}
    local looks = math.floor((scores[i] % 1) * 16 + 0.5) + 1
    if looks >= ORPHAN_LOOKS then
      orphans = orphans + 1  -- left out of `unreachable`: the ZREM below removes it for good
    else
      unreachable[#unreachable + 1] = string.format('%.4f', now + 60000 + looks / 16)
      unreachable[#unreachable + 1] = expired[i]
    end
  end
  fields[i] = f
end
for i = 1, #expired do
  local id = expired[i]
  local jk = prefix .. 'job:' .. id
  local f = fields[i]
  -- Only a job still active under a lease is recovered; an id listed in `active` whose record says
  -- otherwise is a leftover (its outcome was recorded) and only leaves the set.
  if f[1] == 'active' then
    local confirmed = f[2] ~= nil and f[2] == f[3]
    -- Counts are computed here and written whole (not HINCRBY, which fails the whole sweep on a
    -- field edited to something that is not an integer): an unreadable one counts from 0.
    local stalls, lapses = count_of(f[6]), count_of(f[7])
    if confirmed then
      stalls = stalls + 1
      redis.call('HSET', jk, 'stalls', stalls, 'attempts', math.max(0, count_of(f[9]) - 1))
    else
      lapses = lapses + 1
      redis.call('HSET', jk, 'lapses', lapses, 'attempts', math.max(0, count_of(f[9]) - 1))
    end
    redis.call('HDEL', jk, 'token')
    if f[4] then group_release(prefix, f[4]) end
    if f[8] then cap_release(prefix, jk, f[8], true) end
    if f[5] == '1' then
      redis.call('HSET', jk, 'state', 'cancelled', 'finished', stamp)
      redis.call('ZADD', cancelled, stamp, id)
      emit(events, maxlen, 'ev', 'cancelled', 'id', id)
      flow_gone(prefix, id, jk, 'Cancelled')
      flow_cancel_kids(prefix, id, jk)
      local fl = redis.call('HMGET', jk, 'parent', 'kids')
      flow_root_ended(meta, 'X', fl[1], fl[2])
    elseif stalls > max_stalls or lapses > max_lapses then
      local why
      if stalls > max_stalls then
        why = 'job stalled ' .. stalls .. ' times (its worker stopped renewing the lease while running it)'
      else
        why = 'lease lapsed ' .. lapses .. ' times before any worker confirmed running the job ' ..
          '(workers may be dying on it)'
      end
      local err = cjson.encode({type = 'Stalled', message = why})
      redis.call('HSET', jk, 'state', 'failed', 'error', err, 'finished', stamp)
      redis.call('ZADD', failed, stamp, id)
      emit(events, maxlen, 'ev', 'failed', 'id', id, 'error', 'stalled too often')
      local fl = redis.call('HMGET', jk, 'parent', 'kids')
      flow_ended(prefix, id, fl[1], 'F', err)
      flow_root_ended(meta, 'F', fl[1], fl[2])
      dead = dead + 1
    else
      redis.call('HSET', jk, 'state', 'waiting')
      push_ready(meta, ready, jk, id)
      emit(events, maxlen, 'ev', 'stalled', 'id', id, 'stalls', stalls, 'lapses', lapses)
      recovered = recovered + 1
    end
  end
end
call_chunked('ZREM', active, nil, expired, 1)
call_chunked('ZADD', active, nil, unreachable, 2)
if recovered > 0 or (#expired > 0 and redis.call('HEXISTS', meta, 'lim') == 1) then wake(wake_key) end
if dead > 0 then trim(meta, failed, prefix, now, 'failed', 100, false) end
local held = tonumber(redis.call('HGET', meta, 'hwait')) or 0
if held > 0 and index_call('SCARD', KEYS[8]) == 0 then held = 0 end
return {recovered, dead, held, orphans}
