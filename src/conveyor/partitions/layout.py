"""Where a partitioned queue's layouts are recorded, and how a reader that does not declare the
queue (the CLI, the API and dashboard for undeclared queues, the alerts probe) opens it whole.

The record is a small sorted set per queue (`redis/keys.py: partition_layout_key`): each partition
count the queue was used with, scored by the layout's epoch (0 when it was only named as a previous
count). The current count, the highest epoch, changes only by an explicit re-partition: a declaration
of M partitions that names the current count as previous (or the first declaration of the queue)
records M one epoch above it. A process still declaring a superseded count (an old worker started
during a rolling deploy) records nothing new, so producers that read the record keep the newer
layout. A reader serves the current count and reads every other recorded one as a previous layout,
so nothing a re-partition left behind is hidden. Only counts are read from the record (0 to
MAX_PARTITIONS, one lookup each), so other members written there by hand, however many, hide
nothing. The record is removed by `obliterate`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from conveyor.job import JobState
from conveyor.queue import Queue
from conveyor.redis.connection import RedisClient
from conveyor.redis.keys import MAX_PARTITIONS, partition_layout_key, validate_queue_name
from conveyor.redis.scripts import Script

# The record's partition counts and their scores, looked up one possible count at a time ("0" to
# "64", written as str(n) writes them): anything else in the record (a hand-written member, however
# many) is never read, so no number of odd members can hide a count or make the read longer.
_COUNTS = f"""
local function counts(key)
  local rows = {{}}
  for n = 0, {MAX_PARTITIONS} do
    local s = redis.call('ZSCORE', key, tostring(n))
    if s then
      rows[#rows + 1] = tostring(n)
      rows[#rows + 1] = s
    end
  end
  return rows
end
"""

# KEYS[1] the record; ARGV[1] the declared current count, ARGV[2..] its previous counts. Returns 1
# when the declared count is the current layout afterwards, 0 when a newer layout supersedes it.
# The current layout is found as parse_layout finds it: the highest score among counts 1..64, ties
# to the larger count (older records are scored by server time in ms; an epoch above them still wins).
_RECORD_LAYOUT = _COUNTS + """
local key, declared = KEYS[1], ARGV[1]
local rows = counts(key)
local top, top_score
for i = 1, #rows, 2 do
  local n, s = tonumber(rows[i]), tonumber(rows[i + 1])
  if n >= 1 and (top == nil or s > top_score or (s == top_score and n > tonumber(top))) then
    top, top_score = rows[i], s
  end
end
local named = false
for i = 2, #ARGV do
  if ARGV[i] == top then named = true end
  if not redis.call('ZSCORE', key, ARGV[i]) then redis.call('ZADD', key, 0, ARGV[i]) end
end
if declared == top then return 1 end
if top == nil or named then
  redis.call('ZADD', key, (top_score or 0) + 1, declared)
  return 1
end
if not redis.call('ZSCORE', key, declared) then redis.call('ZADD', key, 0, declared) end
return 0
"""
_RECORD_SCRIPT = Script("record_layout", _RECORD_LAYOUT, hashlib.sha1(_RECORD_LAYOUT.encode()).hexdigest(), 1)


async def record_layout(
    client: RedisClient, prefix: str, name: str, current: int, previous: Sequence[int] = ()
) -> bool:
    """Record `current` and `previous` (one idempotent script run). `current` becomes the queue's
    current layout only on the queue's first declaration or when `previous` names the current
    layout (a re-partition); otherwise it is kept as a previous layout. True when `current` is the
    current layout afterwards."""
    args = [str(current), *(str(n) for n in previous)]
    done = await _RECORD_SCRIPT(client, [partition_layout_key(name, prefix)], args)
    return bool(done)


# KEYS: the records of some queues (all in the {partitions} slot). Returns, per record, its members
# that are partition counts, each followed by its score (`counts` above): a member that is not one (a
# hand-written member, bytes that are not UTF-8) never leaves the server, so one bad member cannot
# make every reader of the queue (the CLI, the API, the maintenance pass) fail to decode the reply,
# and many cannot hide the counts.
_READ_LAYOUTS = _COUNTS + """
local out = {}
for k = 1, #KEYS do
  out[k] = counts(KEYS[k])
end
return out
"""
_READ_SCRIPT = Script("read_layouts", _READ_LAYOUTS, hashlib.sha1(_READ_LAYOUTS.encode()).hexdigest(), 0)


def parse_layout(rows: Sequence[tuple[Any, Any]]) -> tuple[int, tuple[int, ...]] | None:
    """(current, previous counts) from the record's rows, ignoring anything malformed; None when
    no valid count is recorded (the queue is not partitioned)."""
    valid: list[tuple[float, int]] = []
    for member, score in rows:
        raw = member.decode() if isinstance(member, bytes) else str(member)
        if raw.isdigit() and 0 <= int(raw) <= MAX_PARTITIONS:  # 0: the plain queue, before partitioning
            valid.append((float(score), int(raw)))
    partitioned = [v for v in valid if v[1] >= 1]
    if not partitioned:
        return None
    current = max(partitioned)[1]
    return current, tuple(sorted({n for _, n in valid if n != current}))


async def read_layout(client: RedisClient, prefix: str, name: str) -> tuple[int, tuple[int, ...]] | None:
    return (await read_layouts(client, prefix, [name]))[name]


async def open_queue(name: str, *, redis: RedisClient, prefix: str = "cv", **options: Any) -> Queue:
    """The queue `name` as Redis records it: a PartitionedQueue over every recorded layout when it is
    partitioned, a plain Queue otherwise (one read)."""
    layout = await read_layout(redis, prefix, validate_queue_name(name))
    return queue_of_layout(name, layout, redis=redis, prefix=prefix, **options)


def queue_of_layout(
    name: str, layout: tuple[int, tuple[int, ...]] | None, *, redis: RedisClient, prefix: str = "cv", **options: Any
) -> Queue:
    """The handle `open_queue` makes for a layout `read_layout` returned (no Redis call)."""
    from conveyor.partitions.queue import PartitionedQueue

    if layout is None:
        return Queue(name, redis=redis, prefix=prefix, **options)
    current, previous = layout
    return PartitionedQueue(name, partitions=current, previous=previous, redis=redis, prefix=prefix, **options)


async def read_layouts(
    client: RedisClient, prefix: str, names: Sequence[str]
) -> dict[str, tuple[int, tuple[int, ...]] | None]:
    """`read_layout` of many queues in one round trip (the records share one slot); members that
    are not partition counts are left out by the server."""
    if not names:
        return {}
    replies: list[Any] = await _READ_SCRIPT(client, [partition_layout_key(name, prefix) for name in names], [])
    return {name: parse_layout(list(zip(flat[::2], flat[1::2], strict=True)))
            for name, flat in zip(names, replies, strict=True)}


async def unserved_jobs(queue: Queue, layout: tuple[int, tuple[int, ...]] | None) -> dict[int, int]:
    """Jobs waiting, delayed or active in each layout of `layout` (the queue's record, see
    `read_layouts`) that `queue` (as a worker serves it) does not cover, by partition count (0: the
    plain queue). A producer using another partition count than the workers puts jobs there that no
    one runs, and nothing else says so."""
    from conveyor.partitions.queue import layout_tags
    from conveyor.partitions.reading import parts_of

    recorded = {0} if layout is None else {0, layout[0], *layout[1]}  # 0: a plain producer records none
    served = {part.keys.tag for part in parts_of(queue)}
    found: dict[int, int] = {}
    for count in sorted(recorded):
        for tag in layout_tags(queue.name, count):
            if tag in served:
                continue
            counts = await Queue(queue.name, redis=queue.client, prefix=queue.prefix, partition_tag=tag).counts()
            pending = sum(counts[s] for s in (JobState.WAITING, JobState.DELAYED, JobState.ACTIVE))
            if pending:
                found[count] = found.get(count, 0) + pending
    return found
