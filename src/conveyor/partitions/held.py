"""Where a partitioned queue already holds the job an explicit id or idempotency key names, so that
the id or key names one job across the whole queue (docs/scaling.md, "Where a job goes").

A job with a group goes to its group's partition, one without to its key's or id's: the same id
or key added again with another group (or none) would be placed in another partition, which does
not know it, and a second job would be made. Before the add, every partition served (the current
layout's and any previous one's) is asked at once whether it holds a job of that key or id; the add
then goes to the partition that does, and answers there as a plain queue's add does (the existing
job, or IdempotencyConflictError when the name or data differ). Jobs with neither an id nor a key
are not looked up (no round trip for them). The look-up and the add are separate calls on separate
slots: two producers adding the same id with different groups at the same moment may still both
create it, each in its own group's partition.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

from conveyor.queue import Queue
from conveyor.redis.scripts import Script

# KEYS[1]: the partition's meta key (it routes the call to the partition's slot); ARGV[1] the
# partition's key prefix, then per job its idempotency key and its id ('' = none). Returns 1 per job
# whose key names a job this partition holds or whose id is a job here, else 0: what add-5's first
# pass finds (a key of another type, or one whose job is gone, names no job).
_FIND_HELD = """
local prefix, out = ARGV[1], {}
for i = 2, #ARGV, 2 do
  local ikey, id, found = ARGV[i], ARGV[i + 1], 0
  if ikey ~= '' then
    local owner = redis.pcall('GET', prefix .. 'idem:' .. ikey)
    if type(owner) == 'string' and redis.call('EXISTS', prefix .. 'job:' .. owner) == 1 then found = 1 end
  end
  if found == 0 and id ~= '' and redis.call('EXISTS', prefix .. 'job:' .. id) == 1 then found = 1 end
  out[#out + 1] = found
end
return out
"""
_FIND_SCRIPT = Script("find_held", _FIND_HELD, hashlib.sha1(_FIND_HELD.encode()).hexdigest(), 1)


def names_of(idempotency_key: str | None, job_id: str | None) -> list[tuple[str, str]]:
    """The names a job answers to in a batch: its key and its id, each tagged with its kind."""
    return [(kind, value) for kind, value in (("key", idempotency_key), ("id", job_id)) if value]


async def find_holders(
    serving: Sequence[Queue], names: Sequence[tuple[int, str, str]], targets: Sequence[Queue]
) -> dict[int, Queue]:
    """The partition already holding each job of `names` (position, idempotency key, id), by
    position: its `targets` partition when that holds it, else the first of `serving` that does. One
    call per partition, all at once; positions held nowhere are left out."""
    if not names or len(serving) < 2:
        return {}
    args = [value for _, key, job_id in names for value in (key, job_id)]

    async def ask(part: Queue) -> list[int]:
        reply = await _FIND_SCRIPT(part.client, [part.keys.meta], [part.keys.base, *args])
        return [int(x) for x in reply]

    found = await asyncio.gather(*(ask(part) for part in serving))
    held: dict[int, Queue] = {}
    for row, (position, _, _) in enumerate(names):
        holders = [part for part, flags in zip(serving, found, strict=True) if flags[row]]
        if holders:
            home = targets[position]
            held[position] = next((p for p in holders if p.keys.tag == home.keys.tag), holders[0])
    return held
