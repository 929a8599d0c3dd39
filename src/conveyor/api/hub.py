"""One event reader per API process: each followed queue's events stream is read once and fanned out
in memory to every subscriber (SSE streams, long-polls, anything else that follows events).

This is the API's counterpart of BullMQ's `QueueEvents`. Without it every SSE stream and every
long-poll ran its own `XREAD BLOCK`, holding one Redis connection each: a few hundred open waits
exhausted the pool and stalled every request. Now a queue costs one blocking connection however
many clients follow it, and a client that waits holds no connection at all.

Use::

    async with hub.subscribe("emails", job_id="42", after=last_event_id) as events:
        async for event in events:          # conveyor.events.Event, in stream order
            ...
        # or, with a deadline: event = await events.next(timeout=5.0)  (None when it passes)

- `queue` names a stream: a queue's name, or a partition's tag (`conveyor.partitions.stream_name`:
  a partitioned queue has one stream per partition, and a job's events are in its partition's).
- `job_id=None` follows every event of the queue; otherwise only that job's events are delivered.
- `after=None` starts with the events that follow the subscription (`events.position` is the stream
  id it starts after, usable as an SSE `id:`); `after="<ms>-<seq>"` first replays the events kept in
  the stream after that id, then continues live, without gap or repeat (ids only grow).
- Leaving the `async with` block (or `await events.aclose()`) ends the subscription; the queue's
  reader stops when its last subscriber leaves.
- `hub.drain()` (the process is stopping) closes every subscription: followers see `events.closed`
  and end (an SSE stream finishes, the client resumes elsewhere with Last-Event-ID; a long-poll
  answers with the job as it is).

Faults: the reader survives connection resets and Redis restarts (redis/faults.py classifies them),
backs off, and resumes from the last id it read. A follower that joins while the reader cannot find
its start position (Redis is down) gets ConnectionFailedError as soon as an attempt fails, not
after `ready_timeout_s`.

A subscriber that falls more than `buffer` events, or `buffer_bytes` of event text, behind (its
follower is stalled: an event stream whose client does not read) holds no more: its buffer is
emptied. One made with `end_on_overflow` is then closed (`events.overflowed`; an SSE stream ends, and
its client resumes with Last-Event-ID); any other re-reads what it missed from the stream (events
trimmed from the capped stream in the meantime are gone; followers re-check the job record for that
case).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Callable
from types import TracebackType

from conveyor.cancelling import cancel_and_wait
from conveyor.errors import ConnectionFailedError
from conveyor.events import Event
from conveyor.queue import Queue
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import is_fault

logger = logging.getLogger(__name__)

StreamId = tuple[int, int]
_MAX_PART = 2**64 - 1
_ID = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")
_READ_COUNT = 500
_BLOCK_MS = 5000
_BACKOFF_MAX_S = 2.0
_EVENT_OVERHEAD = 64  # bytes counted per event besides its text (its id, type and job id included)


def parse_stream_id(value: str) -> StreamId | None:
    """`<ms>-<seq>` (or `<ms>`, as Redis reads it: `<ms>-0`) within Redis's 64-bit range, else None."""
    m = _ID.match(value)
    if m is None:
        return None
    ms, seq = int(m.group(1)), int(m.group(2) or 0)
    if ms > _MAX_PART or seq > _MAX_PART:
        return None
    return ms, seq


def _stream_queue(stream: str, client: RedisClient, prefix: str) -> Queue:
    """The handle whose events stream `stream` names: a queue, or one partition (`<queue>#<i>.<n>`)."""
    name, sep, _ = stream.partition("#")
    return Queue(name, redis=client, prefix=prefix, partition_tag=stream if sep else "")


def event_size(event: Event) -> int:
    """What an event counts against a subscriber's `buffer_bytes`: its text, plus a fixed overhead."""
    size = _EVENT_OVERHEAD + len(event.id) + len(event.type) + len(event.job_id or "")
    for name, value in event.fields.items():
        size += len(name) + len(value)
    return size


def _key(value: str) -> StreamId:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


class Subscription:
    """Events of one queue (optionally one job) for one follower; see the module docstring."""

    def __init__(
        self, hub: EventHub, queue: str, job_id: str | None, after: str | None, end_on_overflow: bool = False
    ) -> None:
        if after is not None and parse_stream_id(after) is None:
            raise ValueError(f"not a stream id: {after[:40]!r}")
        self._hub = hub
        self.queue = queue
        self.job_id = job_id
        self._after = after
        self._reader: _QueueReader | None = None
        self._buffer: deque[tuple[Event, int]] = deque()
        self._bytes = 0  # event_size() of what `_buffer` holds
        self._wake = asyncio.Event()
        self._lagged = False
        self._end_on_overflow = end_on_overflow
        self.overflowed = False  # closed because its follower fell too far behind (end_on_overflow)
        self._replay_to: str | None = None  # replay (cursor, replay_to] from the stream before the buffer
        self._replayed: deque[Event] = deque()
        self._cursor: StreamId = (0, 0)
        self.position = "0-0"  # the stream id this subscription starts after (set on entry)
        self._base = "0-0"  # the reader's position when this subscription began receiving events
        self._closed = hub.draining  # a process that is stopping follows nothing new

    # -- lifecycle
    async def __aenter__(self) -> Subscription:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Join the queue's reader; returns once `position` is known. A closed subscription never
        joins (a stream closed before its first read would otherwise stay followed for good)."""
        if self._reader is not None or self._closed:
            return
        reader = self._hub._reader(self.queue)
        self._reader = reader
        reader.add(self)
        try:
            await reader.ready()
        except BaseException:
            reader.remove(self)
            raise
        # `base` was set by the reader at the same instant this subscription began receiving events.
        start = self._after if self._after is not None else self._base
        self.position = start
        self._cursor = _key(start)
        if self._after is not None and _key(self._after) < _key(self._base):
            self._replay_to = self._base

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def limits(self) -> tuple[int, int]:
        """How far (events, bytes) this subscription may fall behind."""
        return self._hub.buffer, self._hub.buffer_bytes

    def close(self) -> None:
        """End the subscription now (synchronous: safe from a callback or a cancelled task); a
        read waiting on it returns None."""
        if not self._closed:
            self._closed = True
            if self._reader is not None:
                self._reader.remove(self)
            self._buffer.clear()
            self._bytes = 0
            self._wake.set()

    async def aclose(self) -> None:
        self.close()

    # -- called by the reader (synchronously, in stream order)

    def _deliver(self, event: Event, size: int) -> bool:
        """Buffer `event`; True when this subscription overflowed now and must be closed (by the
        reader, once it no longer iterates its subscribers)."""
        if self._lagged or self._closed:
            return False
        if len(self._buffer) >= self._hub.buffer or self._bytes + size > self._hub.buffer_bytes:
            self._buffer.clear()
            self._bytes = 0
            if self._end_on_overflow:
                self.overflowed = True
                return True
            self._lagged = True
        else:
            self._buffer.append((event, size))
            self._bytes += size
        self._wake.set()
        return False

    # -- reading
    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._closed:
            event = await self.next(timeout=None)
            if event is not None:
                return event
        raise StopAsyncIteration

    async def next(self, timeout: float | None) -> Event | None:
        """The next event, or None when `timeout` seconds pass first (None = wait as long as it takes)."""
        if self._closed:
            return None
        if self._reader is None:
            await self.start()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._closed:
                return None
            if self._lagged:
                # Fell behind: note where the reader is now and re-read the gap from the stream.
                assert self._reader is not None
                self._lagged = False
                self._buffer.clear()
                self._bytes = 0
                self._replay_to = self._reader.cursor
                self._replayed.clear()  # re-read from the cursor: nothing is skipped or repeated
            if self._replay_to is not None:
                event = await self._replay_one()
                if event is not None:
                    return event
                continue
            while self._buffer:
                event, size = self._buffer.popleft()
                self._bytes -= size
                key = _key(event.id)
                if key <= self._cursor:
                    continue  # already replayed from the stream
                self._cursor = key
                return event
            self._wake.clear()
            if deadline is None:
                await self._wake.wait()
                continue
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that arrives as the wake-up does, and a long-poll whose client left would go on.
                async with asyncio.timeout(left):
                    await self._wake.wait()
            except TimeoutError:
                return None

    async def _replay_one(self) -> Event | None:
        """The next event of the replay range, or None once it is done (the buffer takes over)."""
        assert self._replay_to is not None
        end = _key(self._replay_to)
        while True:
            while self._replayed:
                event = self._replayed.popleft()
                self._cursor = _key(event.id)
                if self.job_id is None or event.job_id == self.job_id:
                    return event
            if self._cursor >= end:
                self._replay_to = None
                return None
            batch = await self._hub._replay(self.queue, f"{self._cursor[0]}-{self._cursor[1]}")
            kept = deque(e for e in batch if _key(e.id) <= end)
            if not kept:
                self._replay_to = None  # nothing more kept in the stream up to `end` (or trimmed)
                return None
            self._replayed = kept


class _QueueReader:
    """The one `XREAD BLOCK` loop of one queue, fanning each event out to its subscribers."""

    def __init__(self, hub: EventHub, queue: str) -> None:
        self.hub = hub
        self.queue = queue
        self.cursor = "0-0"
        self.by_job: dict[str, set[Subscription]] = {}
        self.everything: set[Subscription] = set()
        self.count = 0
        self._ready = asyncio.Event()
        # Set once the start position is known, or once an attempt to read it failed (cleared when
        # the next attempt begins): followers waiting to start learn of a Redis that is down at once.
        self._settled = asyncio.Event()
        self._failure: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    def add(self, sub: Subscription) -> None:
        if sub.job_id is None:
            self.everything.add(sub)
        else:
            self.by_job.setdefault(sub.job_id, set()).add(sub)
        self.count += 1
        sub._base = self.cursor  # meaningful once ready; the reader sets it again when it gets ready
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run(), name=f"conveyor-events-{self.queue}")

    def remove(self, sub: Subscription) -> None:
        group = self.everything if sub.job_id is None else self.by_job.get(sub.job_id)
        if group is not None and sub in group:
            group.discard(sub)
            self.count -= 1
            if sub.job_id is not None and not group:
                del self.by_job[sub.job_id]

    async def ready(self) -> None:
        """Wait until the reader knows its start position; a Redis that stays unusable is a fault."""
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation that
            # arrives as the reader gets ready, and the follower would go on waiting.
            async with asyncio.timeout(self.hub.ready_timeout_s):
                await self._settled.wait()
        except TimeoutError:
            pass
        if not self._ready.is_set():
            raise ConnectionFailedError(f"the events of queue {self.queue!r} cannot be read now")

    def _subscribers(self) -> list[Subscription]:
        out = list(self.everything)
        for group in self.by_job.values():
            out.extend(group)
        return out

    async def _start_position(self, queue: Queue) -> None:
        self.cursor = await queue.last_event_id()
        for sub in self._subscribers():
            sub._base = self.cursor
        self._ready.set()
        self._settled.set()

    async def run(self) -> None:
        queue = _stream_queue(self.queue, self.hub.blocking_client(), self.hub.prefix)
        delay = 0.05
        faulted = False
        while self.count > 0:
            try:
                if not self._ready.is_set():
                    self._settled.clear()
                    await self._start_position(queue)
                elif faulted:
                    await self._check_reset(queue)
                faulted = False
                events = await queue.read_events(self.cursor, count=_READ_COUNT, block_ms=self.hub.block_ms)
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not (isinstance(exc, ConnectionFailedError) or is_fault(exc)):
                    logger.exception("event reader of queue %r failed; retrying", self.queue)
                elif not faulted:
                    logger.warning("event reader of queue %r: Redis not usable (%s); retrying", self.queue,
                                   type(exc).__name__)
                faulted = True
                if not self._ready.is_set():
                    self._settled.set()  # the followers waiting to start: Redis cannot be read now
                await asyncio.sleep(delay)
                delay = min(_BACKOFF_MAX_S, delay * 2)
                continue
            self._dispatch(events)
        # No subscriber left: forget this reader (synchronously with the check above, so a new
        # subscriber either joined before it — and the loop goes on — or starts a fresh reader).
        if self.hub._readers.get(self.queue) is self:
            del self.hub._readers[self.queue]

    async def _check_reset(self, queue: Queue) -> None:
        """After a fault: a server that came back without the stream (no persistence) restarts ids
        from scratch; follow its new head instead of waiting for ids above the old one."""
        head = await queue.last_event_id()
        if _key(head) < _key(self.cursor):
            logger.warning("events stream of queue %r restarted below the last id read; following it anew",
                           self.queue)
            self.cursor = head

    def _dispatch(self, events: list[Event]) -> None:
        overflowed: list[Subscription] = []
        for event in events:
            self.cursor = event.id
            size = event_size(event)
            for sub in self.everything:
                if sub._deliver(event, size):
                    overflowed.append(sub)
            if event.job_id is not None:
                group = self.by_job.get(event.job_id)
                if group:
                    for sub in group:
                        if sub._deliver(event, size):
                            overflowed.append(sub)
        for sub in overflowed:
            sub.close()  # out of the loops above: closing leaves the sets they iterate


class EventHub:
    """The per-process fan-out of queue events (one per `create_app`)."""

    def __init__(
        self,
        client: Callable[[], RedisClient],
        blocking_client: Callable[[], RedisClient],
        prefix: str,
        *,
        buffer: int = 10_000,
        buffer_bytes: int = 1024 * 1024,
        block_ms: int = _BLOCK_MS,
        ready_timeout_s: float = 10.0,
    ) -> None:
        """`client` serves replays (short calls); `blocking_client` the readers' XREAD BLOCK (one
        connection per followed queue). `buffer`, `buffer_bytes`: how far (events, event_size() total)
        a subscriber may fall behind before it is closed or re-reads the gap (module docstring)."""
        self._client = client
        self.blocking_client = blocking_client
        self.prefix = prefix
        self.buffer = buffer
        self.buffer_bytes = buffer_bytes
        self.block_ms = block_ms
        self.ready_timeout_s = ready_timeout_s
        self._readers: dict[str, _QueueReader] = {}
        self.draining = False

    def subscribe(
        self, queue: str, job_id: str | None = None, after: str | None = None, *, end_on_overflow: bool = False
    ) -> Subscription:
        """Follow `queue`'s events (only `job_id`'s when given), live or from just after `after`;
        `end_on_overflow`: close it, rather than re-read, once it falls too far behind.
        Raises ValueError for an `after` that is not a stream id within Redis's range."""
        return Subscription(self, queue, job_id, after, end_on_overflow)

    def followed(self) -> dict[str, int]:
        """Subscribers per followed queue (for tests and metrics)."""
        return {name: reader.count for name, reader in self._readers.items() if reader.count}

    def reading(self, queue: str) -> bool:
        """Whether `queue`'s reader knows its position (its subscribers receive events from then on)."""
        reader = self._readers.get(queue)
        return reader is not None and reader._ready.is_set()

    def _reader(self, queue: str) -> _QueueReader:
        reader = self._readers.get(queue)
        if reader is None:
            reader = _QueueReader(self, queue)
            self._readers[queue] = reader
        return reader

    async def _replay(self, queue: str, cursor: str) -> list[Event]:
        return await _stream_queue(queue, self._client(), self.prefix).read_events(cursor, count=_READ_COUNT)

    def drain(self) -> None:
        """The process is stopping: close every subscription now (a read waiting on one returns None,
        with `closed` set) and every later one at birth, so streams and long-polls end at once instead
        of holding the shutdown up. Synchronous: safe from a signal handler's callback."""
        self.draining = True
        for reader in list(self._readers.values()):
            for sub in reader._subscribers():
                sub.close()

    async def close(self) -> None:
        """Stop every reader (the API's shutdown)."""
        readers = list(self._readers.values())
        self._readers.clear()
        await cancel_and_wait([reader.task for reader in readers if reader.task is not None])
        for reader in readers:
            if reader.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader.task
