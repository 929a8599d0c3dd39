-- Trip records make the worker's finish-and-claim round trip idempotent (docs/internals.md, "Trips").
-- A trip that recorded outcomes or leased jobs leaves <p>trip:<trip id> for a while (longer than a
-- lease): the outcome codes it returned and the (id, token) pairs it leased. The same trip sent again
-- (its reply was lost) finds the record and answers from it: the same codes, and the jobs it leased
-- that still hold those tokens, re-read; nothing is recorded or leased twice. The worker acknowledges
-- a reply on its next trip, which deletes the record early.

local function trip_ack(prefix, ids)
  for i = 1, #ids do redis.call('DEL', prefix .. 'trip:' .. ids[i]) end
end

-- The reply to a trip sent again, or nil when there is no record (the trip never ran, or its record
-- expired: then it runs afresh, and outcomes already recorded under their token answer OK).
local function trip_replay(key, ttl, meta, prefix)
  local raw = redis.call('GET', key)
  if not raw then return nil end
  -- The record: "<next due>|<code>,<code>...|<id> <token> <id> <token>..." (ids hold no '|', ',' or ' ').
  local due, codes, leased = string.match(raw, '^([^|]*)|([^|]*)|(.*)$')
  local out = {}
  for code in string.gmatch(codes, '[^,]+') do out[#out + 1] = tonumber(code) end
  out[#out + 1] = tonumber(due)
  local m = redis.call('HMGET', meta, 'hwait', 'hver')
  out[#out + 1] = ((tonumber(m[1]) or 0) > 0) and (tonumber(m[2]) or 0) or 0
  for id, token in string.gmatch(leased, '(%S+) (%S+)') do
    local f = job_call('HMGET', prefix .. 'job:' .. id, 'token', 'state', 'attempts', 'name', 'data', 'opts') or {}
    if f[1] == token and f[2] == 'active' then
      out[#out + 1] = id
      out[#out + 1] = token
      out[#out + 1] = tonumber(f[3])
      out[#out + 1] = f[4]
      out[#out + 1] = f[5]
      out[#out + 1] = f[6] or ''
    end
  end
  -- A write (after every read: a key of a migrating slot fails the script before it wrote), so
  -- that a durable caller's WAIT/WAITAOF covers everything up to the first run.
  redis.call('PEXPIRE', key, ttl)
  return out
end

-- Keep what this trip did: `codes` (one per outcome) and the claim reply `claimed` (header of two,
-- then 6 fields per leased job). Nothing is kept for a trip that neither recorded nor leased.
local function trip_record(key, ttl, codes, claimed)
  if #codes == 0 and #claimed <= 2 then return end
  local leased = {}
  for i = 3, #claimed, 6 do
    leased[#leased + 1] = claimed[i]
    leased[#leased + 1] = claimed[i + 1]
  end
  local rec = claimed[1] .. '|' .. table.concat(codes, ',') .. '|' .. table.concat(leased, ' ')
  redis.call('SET', key, rec, 'PX', ttl)
end
