--[[ stream-3: append a chunk to a leased job's streamed output (fenced by its lease token), bounded.
KEYS: 1 events, 2 job hash, 3 job output string
ARGV: 1 token, 2 max output bytes, 3 events maxlen, 4 job id, 5 call number (1, 2, ... per lease), then
      the chunk in 1 to 128 pieces (the caller cuts long chunks on character boundaries; each piece
      is one output event)
A call is idempotent: the job hash's `oseq` holds the last call's token, number and reply, so the
same call sent again (its reply was lost) gets that reply and writes nothing.
The output belongs to one attempt: the first chunk of a new attempt starts it again (the job hash's
`oatt` names the attempt the output belongs to). A chunk that would take the output past the limit
is dropped whole and marks the output truncated (`otrunc`, one output event with trunc=1 and no
chunk); every later chunk of the attempt is dropped too, so the output is always a prefix of what the
handler streamed. Empty pieces write nothing.
Returns: {code, offset, kept}: offset = output length (bytes) before the chunk, kept = 1 appended, 0 dropped
Codes: 0 OK, -1 NOT_FOUND, -2 LEASE_LOST, -6 INVALID_INPUT
Events: output (id, att, off, chunk[, trunc]), one per piece; a piece over EVENT_VALUE_MAX bytes is
        output (id, att, off, size) without its chunk (readers read it back from the stored output)
]]
--@include common

local max = int_in(ARGV[2], 0, 536870912)
local npieces = #ARGV - 5
local seq = int_in(ARGV[5], 1, 1e15)
if not max or not seq or not ARGV[4] or ARGV[4] == '' or npieces < 1 or npieces > 128 then return {-6, 0, 0} end
local f = redis.call('HMGET', KEYS[2], 'token', 'state', 'attempts', 'oatt', 'otrunc', 'oseq')
if not f[2] then return {-1, 0, 0} end
if f[1] ~= ARGV[1] or f[2] ~= 'active' then return {-2, 0, 0} end
local call = ARGV[1] .. ' ' .. ARGV[5] .. ' '
if f[6] and string.sub(f[6], 1, #call) == call then  -- this very call, sent again: its first reply
  local off, kept = string.match(string.sub(f[6], #call + 1), '^(%d+) (%d)$')
  if off then return {0, tonumber(off), tonumber(kept)} end
end
local function answer(off, kept)
  redis.call('HSET', KEYS[2], 'oseq', call .. off .. ' ' .. kept)
  return {0, off, kept}
end
local att = f[3] or '0'
local trunc = f[5]
if f[4] ~= att then
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[2], 'oatt', att)
  redis.call('HDEL', KEYS[2], 'otrunc')
  trunc = nil
end
local len = redis.call('STRLEN', KEYS[3])
if trunc == '1' then return answer(len, 0) end
local size = 0
for i = 6, #ARGV do size = size + #ARGV[i] end
if size == 0 then return answer(len, 1) end
if len + size > max then
  redis.call('HSET', KEYS[2], 'otrunc', '1')
  emit(KEYS[1], ARGV[3], 'ev', 'output', 'id', ARGV[4], 'att', att, 'off', len, 'chunk', '', 'trunc', '1')
  return answer(len, 0)
end
local off = len
for i = 6, #ARGV do
  local piece = ARGV[i]
  if #piece > 0 then
    redis.call('APPEND', KEYS[3], piece)
    if #piece <= EVENT_VALUE_MAX then
      emit(KEYS[1], ARGV[3], 'ev', 'output', 'id', ARGV[4], 'att', att, 'off', off, 'chunk', piece)
    else
      emit(KEYS[1], ARGV[3], 'ev', 'output', 'id', ARGV[4], 'att', att, 'off', off, 'size', #piece)
    end
    off = off + #piece
  end
end
return answer(len, 1)
