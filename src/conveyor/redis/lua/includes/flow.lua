-- Flows (docs/flows.md): the child's half of the hand-over, written in the child's own slot by the
-- script that ends the child. A child job carries `parent` = "<parent queue>:<parent id>"; when it
-- ends, one record goes to its queue's outbox hash <p>outbox (field: the child id, value:
-- "<C|F>|<parent ref>|<result or error JSON>"). The worker's mover delivers each record to the
-- parent's slot (flow-deliver-1.lua, idempotent: a child is counted at most once) and only then
-- deletes it (flow-ack-1.lua), so a crash between the two halves re-delivers, never loses.
-- A parent that ends cancelled (or is removed) leaves a record "!<id>" -> "K|<run>|<child refs>" (run:
-- the parent's creation stamp `ts`): the mover cancels those children that have not ended, marking
-- each with `pcx` = run (cancelled with its parent). Such a child's failure record carries `run` in
-- its error, so a parent of the same id written anew (another run: the flow sent again after the
-- removal) does not count it (flow-deliver-1.lua), and a flow sent again writes such a child afresh
-- (flow-add-0.lua).

local FLOW_WAITING = 'waiting-children'

-- Adds `n` to a parent's `pending` and returns it. A value that is not a count (edited by hand) is
-- counted again from the children that have neither a result nor an error (call it after writing
-- the child's result or error): starting it again from `n` would release the parent early.
local function flow_pending_add(jk, n)
  local v = redis.pcall('HINCRBY', jk, 'pending', n)
  if type(v) ~= 'table' then return v end
  local pending = 0
  for ref in string.gmatch(redis.call('HGET', jk, 'kids') or '', '%S+') do
    if redis.call('HEXISTS', jk, 'r:' .. ref) == 0 and redis.call('HEXISTS', jk, 'e:' .. ref) == 0 then
      pending = pending + 1
    end
  end
  redis.call('HSET', jk, 'pending', pending)
  return pending
end

local function flow_ended(prefix, id, parent, kind, payload)
  if not parent or parent == '' then return end
  redis.call('HSET', prefix .. 'outbox', id, kind .. '|' .. parent .. '|' .. payload)
end

local function flow_cancel_kids(prefix, id, jk)
  local kids = redis.call('HGET', jk, 'kids')
  if kids and kids ~= '' then
    redis.call('HSET', prefix .. 'outbox', '!' .. id, 'K|' .. (redis.call('HGET', jk, 'ts') or '') .. '|' .. kids)
  end
end

-- A job that ended without running (cancelled, removed, drained, expired) as its parent sees it.
local function flow_gone(prefix, id, jk, why)
  local f = redis.call('HMGET', jk, 'parent', 'pcx')
  if f[1] then
    local err = {type = why, message = 'the child job was ' .. string.lower(why)}
    if f[2] then
      err.run = f[2]
      err.message = err.message .. ' with its parent'
    end
    flow_ended(prefix, id, f[1], 'F', cjson.encode(err))
  end
end

-- The error a child cancelled cooperatively (finish-10.lua, kind X) hands over: with the `run` of the
-- parent whose cancellation it honoured, if any (see the top of this file).
local function flow_run_error(jk, payload)
  local run = redis.call('HGET', jk, 'pcx')
  if not run then return payload end
  local ok, err = pcall(cjson.decode, payload)
  if not ok or type(err) ~= 'table' then
    err = {type = 'Cancelled', message = 'the child job was cancelled with its parent'}
  end
  err.run = run
  return cjson.encode(err)
end

-- A flow's root (children, no parent) ended: meta counters flows_completed / flows_failed (metrics).
local function flow_root_ended(meta, kind, parent, kids)
  if parent or not kids or kids == '' then return end
  incr(meta, kind == 'C' and 'flows_completed' or 'flows_failed', 1)
end

-- A flow's root that ended failed or cancelled (counted in flows_failed) runs again: retried
-- (retry-6.lua), or resumed by a retried child that completed (flow-deliver-1.lua). It leaves
-- flows_failed, so the counters say each root's final outcome (never below 0; a value that is not a
-- count is left as it is). Called only by the script that takes the root out of failed/cancelled, so
-- a retry sent again (the root is no longer failed) does not count twice.
local function flow_root_reopened(meta, parent, kids)
  if parent or not kids or kids == '' then return end
  local v = tonumber(redis.call('HGET', meta, 'flows_failed'))
  if v and v >= 1 then redis.pcall('HINCRBY', meta, 'flows_failed', -1) end
end

-- Kind W (finish-10.lua): the handler asked to wait for its children; it runs again once they end.
-- Under `fail`, a child that failed for good while the job was running (flow-deliver fails only a
-- parent in waiting-children) fails it now, as it would have failed it there: returns that child's
-- ref (the job is then failed), else nil.
local function flow_wait(prefix, meta, ready, wake_key, jk, id, now)
  incr(jk, 'attempts', -1)
  local f = redis.call('HMGET', jk, 'pending', 'nerr', 'ocf', 'kids', 'parent')
  if (tonumber(f[2]) or 0) > 0 and (f[3] or 'fail') == 'fail' then
    for cref in string.gmatch(f[4] or '', '%S+') do
      local e = redis.call('HGET', jk, 'e:' .. cref)
      if e then
        local ok, cause = pcall(cjson.decode, e)
        local msg = (ok and type(cause) == 'table' and type(cause.message) == 'string') and cause.message or ''
        local err = cjson.encode({type = 'ChildFailed', child = cref,
                                  message = 'child ' .. cref .. ' failed: ' .. string.sub(msg, 1, 500)})
        local stamp = num(now)
        redis.call('HSET', jk, 'state', 'failed', 'error', err, 'finished', stamp, 'cfail', cref)
        redis.call('ZADD', prefix .. 'failed', stamp, id)
        flow_ended(prefix, id, f[5], 'F', err)
        flow_root_ended(meta, 'F', f[5], f[4])
        return cref
      end
    end
  end
  local pending = tonumber(f[1])
  if not pending then pending = f[1] and flow_pending_add(jk, 0) or 0 end  -- spoiled: counted again
  if pending > 0 then
    redis.call('HSET', jk, 'state', FLOW_WAITING)
    redis.call('ZADD', prefix .. FLOW_WAITING, num(now), id)
  else
    redis.call('HSET', jk, 'state', 'waiting')
    push_ready(meta, ready, jk, id)
    wake(wake_key)
  end
  return nil
end
