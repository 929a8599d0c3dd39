-- Shared helpers, flattened into every script by the loader (conveyor/redis/scripts.py).

-- Redis time, read once per script run: the timestamps and counter floors of one run agree, and a
-- run pays one TIME call however many of them it takes.
local RUN_TIME = nil
local function redis_time()
  if not RUN_TIME then RUN_TIME = redis.call('TIME') end
  return RUN_TIME
end

local function now_ms()
  local t = redis_time()
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integral numbers as exact decimal strings (tostring would print 1.7e+12). '%d' (a 64-bit integer
-- in Redis's Lua) is about 2.5x cheaper than '%.0f', which stays for anything not integral.
local function num(n)
  if n % 1 == 0 then return string.format('%d', n) end
  return string.format('%.0f', n)
end

-- Input checks, run before a script's first write (a failed check returns a code, nothing written).
-- An integer argument in [lo, hi], or nil (NaN, inf, fractions and non-numbers included).
local function int_in(v, lo, hi)
  local n = tonumber(v)
  if n and n >= lo and n <= hi and n % 1 == 0 then return n end  -- NaN fails every comparison
  return nil
end

-- The widest duration a script accepts, in ms (100 years); option ranges are narrower (options.py).
local MAX_MS = 3155760000000
-- Counters below 2^53 stay exact in a Lua double.
local MAX_COUNT = 9007199254740991

-- A queue key a script is about to write, checked before its first write: a key edited by hand into
-- another Redis type fails the script with WRONGTYPE here, nothing written, instead of at the write
-- that meets it after others (a job record written, then its set refusing it: a job in no set). The
-- loader turns the error into SpoiledKeyError naming the key (conveyor/redis/spoiled.py).
local function key_type(key)
  local t = redis.call('TYPE', key)
  return type(t) == 'table' and t.ok or t
end

local function must_be(key, want)
  local t = key_type(key)
  if t ~= want and t ~= 'none' then
    error({err = 'WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want})
  end
end

-- A command on a job record that a hand edit may have replaced with another Redis type: such a
-- record is no job and answers nil, as a missing one does, instead of failing the whole script (a
-- trip that failed on it would be sent again and fail again: the worker and the queue stand still).
-- Any other error (a key out of reach while the queue's slot migrates) still fails the script.
local function job_call(cmd, jk, ...)
  local r = redis.pcall(cmd, jk, ...)
  if type(r) == 'table' and r.err then
    if string.sub(r.err, 1, 9) == 'WRONGTYPE' then return nil end
    error(r)
  end
  return r
end

-- A command on a queue's own index of held jobs (<p>holds, <p>hold:<name>), or on any key a script
-- is about to delete anyway (obliterate), that a hand edit may have replaced with another Redis
-- type: such a key lists no job, so it is deleted and the command runs again on the empty key,
-- instead of failing every script that meets it (trips holding or taking back jobs, the sweep).
-- Any other error still fails the script.
local function index_call(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    if string.sub(r.err, 1, 9) ~= 'WRONGTYPE' then error(r) end
    redis.call('DEL', key)
    return redis.call(cmd, key, ...)
  end
  return r
end

-- Reserve `n` numbers of a per-queue counter (generated ids, lease tokens) and return the last one.
-- The counter never goes below Redis time in microseconds, so numbers handed out before a deleted
-- meta hash (obliterate) or before a failover to a replica that had not seen them are never handed
-- out again, as long as the servers' clocks are sane; it stays below 2^53 until the year 2255.
-- COUNTERS holds the counter values this run already read (a caller reading meta anyway may put one
-- there, keyed '<meta key> <field>') or wrote, which saves the HGET.
-- A count stored in a job's record (attempts, stalls, lapses) as a whole number in [0, 10^6]; anything
-- else (edited by hand: not a number, negative, fractional, huge) reads as 0.
local function count_of(v)
  v = tonumber(v)
  if v and v >= 0 and v <= 1000000 then return math.floor(v) end
  return 0
end

-- HINCRBY for counters that a hand edit may have spoiled (meta's seq, hwait, hver, gwait,
-- completed_bytes, flow counts; a job's pending): a field that is not an integer (or would overflow)
-- starts again from `n` instead of failing the whole script, which would wedge every add or trip of
-- the queue. One call, as before, when the field is sound.
local function incr(key, field, n)
  local v = redis.pcall('HINCRBY', key, field, n)
  if type(v) == 'table' then
    redis.call('HSET', key, field, n)
    return n
  end
  return v
end

-- A stored value no counter can count on by ones (edited by hand: 2^53 or more, inf, nan; each next
-- number would equal the last, so every job would get one id and every lease one token) is ignored:
-- the counter goes on from the clock.
local COUNTERS = {}
local COUNTER_MAX = 9007194959773696 -- 2^53 - 2^32: room for any batch below 2^53
local function reserve(meta, field, n)
  local known = meta .. ' ' .. field
  local last = COUNTERS[known]
  if last == nil then last = tonumber(redis.call('HGET', meta, field)) or 0 end
  if not (last < COUNTER_MAX) then last = 0 end
  local t = redis_time()
  local floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if last < floor then last = floor end
  last = last + n
  redis.call('HSET', meta, field, num(last))
  COUNTERS[known] = last
  return last
end

-- Runs `cmd key <prefix args> <items...>` over `items` in slices of at most 4000 values (Lua's unpack
-- fails above about 8000), `step` values per element (2 for score/member pairs).
local UNPACK_SLICE = 4000
local function call_chunked(cmd, key, extra, items, step)
  local n = #items
  local slice = UNPACK_SLICE - (UNPACK_SLICE % step)
  for from = 1, n, slice do
    local to = from + slice - 1
    if to > n then to = n end
    if extra then
      redis.call(cmd, key, extra, unpack(items, from, to))
    else
      redis.call(cmd, key, unpack(items, from, to))
    end
  end
end

-- Ready-set score: higher priority first, then arrival order (seq from meta).
-- priority is in [-1000, 1000]; (1000 - p) * 2^41 + seq stays below 2^53. A stored priority edited
-- by hand out of that range (or to 'nan', which Lua reads as a number and ZADD refuses) reads as 0.
local function ready_score(meta, priority)
  local seq = incr(meta, 'seq', 1)
  local p = tonumber(priority) or 0
  if not (p >= -1000 and p <= 1000) then p = 0 end
  return num((1000 - p) * 2199023255552 + seq)
end

--@include events

-- Appends one event ('ev', type, fields...) unless the queue's events mode drops it (events.lua).
-- The bytes of a job's value (progress JSON, log line, output piece) an event carries: a larger value
-- stays on the job record only, and its event says how large it is (`size`), so the capped stream's
-- worst case is maxlen events of about this size (events.EVENT_VALUE_BYTES; docs/events.md).
local EVENT_VALUE_MAX = 1024

local function emit(events, maxlen, ...)
  if not event_wanted(events, select(2, ...)) then return end
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', ...)
end

-- The job id an idempotency key (<p>idem:<key>, a string) names, or nil. A key edited by hand into
-- another type names no job: it reads as nil (an add's SET then replaces it) and, with `drop_bad`,
-- is deleted, instead of failing the script (a remove, obliterate, every retention trim).
local function idem_owner(ik, drop_bad)
  local r = redis.pcall('GET', ik)
  if type(r) == 'table' and r.err then
    if string.sub(r.err, 1, 9) ~= 'WRONGTYPE' then error(r) end
    if drop_bad then redis.call('DEL', ik) end
    return nil
  end
  return r
end

-- Delete a job's record, log and streamed output, and its idempotency key when that still points at it.
-- A retained completed record carries `sz`, its share of meta `completed_bytes` (retention.lua),
-- given back here.
local function drop_job(prefix, id, ikey)
  if ikey then
    local ik = prefix .. 'idem:' .. ikey
    if idem_owner(ik, true) == id then redis.call('DEL', ik) end
  end
  local jk = prefix .. 'job:' .. id
  local sz = job_call('HGET', jk, 'sz')  -- (a record edited into another type is deleted all the same)
  if sz then incr(prefix .. 'meta', 'completed_bytes', -(tonumber(sz) or 0)) end
  redis.call('DEL', jk, prefix .. 'log:' .. id, prefix .. 'out:' .. id)
end

-- The length of the wake list. It holds markers only, so a key edited by hand into another type
-- (which would fail every script that wakes: every add, every trip that requeues a job) is
-- replaced: deleted here, and the caller pushes a fresh marker.
local function wake_len(wake_key)
  local n = redis.pcall('LLEN', wake_key)
  if type(n) == 'table' then
    if not (n.err and string.sub(n.err, 1, 9) == 'WRONGTYPE') then error(n) end
    redis.call('DEL', wake_key)
    return 0
  end
  return n
end

-- At most one marker waits in the wake list; idle workers block on it.
local function wake(wake_key)
  if wake_len(wake_key) == 0 then
    redis.call('LPUSH', wake_key, '1')
  end
end

--@lazy groups

-- Grouped jobs go to their group's ready set (see groups.lua), the others to `ready`.
local function push_ready(meta, ready, jk, id)
  local f = redis.call('HMGET', jk, 'prio', 'group')
  if f[2] then
    group_push(meta, ready, f[2], ready_score(meta, f[1]), id)
  else
    redis.call('ZADD', ready, ready_score(meta, f[1]), id)
  end
end

-- Adds to `delayed` and wakes sleepers when this job is now the earliest, so they re-time their sleep.
local function push_delayed(delayed, wake_key, id, due)
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  redis.call('ZADD', delayed, num(due), id)
  if first[2] == nil or tonumber(first[2]) > due then
    wake_len(wake_key)  -- (replaces a key edited into another type)
    redis.call('LPUSH', wake_key, '1')
    redis.call('LTRIM', wake_key, 0, 0)
  end
end
