"""Live events of several queues on one Server-Sent Events connection.

The dashboard follows the queues a page shows with one connection (a browser allows about six per
host, so a stream per queue would starve the page's own requests) and re-reads the page when an
event arrives, instead of polling. Each frame is one queue event with its `queue` added; the stream
is a notification channel, not a log: a `ready` event comes once every queue is followed (every
later event reaches the stream), and it carries no `id:` and cannot be resumed — a client that
reconnects re-reads the state it shows. When a client falls behind by more than `_BACKLOG` events
or `CONVEYOR_API_SSE_BUFFER_BYTES` of event text, the excess is dropped and one `resync` event says
so, in the place of what was dropped.

Served from the process's event hub (api/hub.py): each queue costs one reader however many clients
follow it, and the stream counts against the key's `CONVEYOR_API_MAX_STREAMS_PER_KEY`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from conveyor.api.auth import ReadKey
from conveyor.api.errors import ApiError
from conveyor.api.head import is_head
from conveyor.api.hub import EventHub, Subscription, event_size
from conveyor.api.keys import Scope as KeyScope
from conveyor.api.responses import json_bytes
from conveyor.api.serialize import event_out
from conveyor.api.sse import (
    STREAM_HEADERS,
    HeldStream,
    key_recheck,
    recheck_every_s,
    stopping,
    stream_head,
    stream_responses,
)
from conveyor.api.state import get_state
from conveyor.events import Event
from conveyor.partitions import parts_of, queue_of_stream, stream_name
from conveyor.views import queue_names

router = APIRouter(prefix="/api", tags=["jobs"])
MAX_QUEUES = 50
_BACKLOG = 1000
_RETRY_MS = 2000


def _frame(event: str, data: bytes) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event.encode(), data)


class _Closed:
    """A pump's subscription was closed under it: the process is stopping (hub.drain)."""


_CLOSED = _Closed()
_Item = tuple[str, Event, int] | _Closed | None  # an event of a queue (and its size); the end; None: dropped


class _Backlog:
    """What waits for a live stream's client: at most `_BACKLOG` events and `max_bytes` of event text.
    Past either, events are dropped and one marker (None: the client gets `resync`) takes their place;
    the markers are not counted, so one always fits."""

    def __init__(self, max_bytes: int) -> None:
        self.items: asyncio.Queue[_Item] = asyncio.Queue()
        self.max_bytes = max_bytes
        self.events = 0
        self.bytes = 0
        self.dropping = False  # a marker is queued and no event has been taken in since

    def put(self, queue: str, event: Event) -> None:
        size = event_size(event)
        if self.events >= _BACKLOG or self.bytes + size > self.max_bytes:
            if not self.dropping:
                self.dropping = True
                self.items.put_nowait(None)
            return
        self.dropping = False
        self.events += 1
        self.bytes += size
        self.items.put_nowait((queue, event, size))

    def took(self, size: int) -> None:
        self.events -= 1
        self.bytes -= size


async def _pump(events: Subscription, out: _Backlog) -> None:
    async for event in events:
        out.put(events.queue, event)
    out.items.put_nowait(_CLOSED)


async def _follow(
    hub: EventHub, queues: list[str], streams: list[str], keepalive_s: float, show_data: bool,
    max_bytes: int,
) -> AsyncGenerator[bytes, None]:
    """`streams`: the queues' events streams (one per partition of a partitioned queue)."""
    out = _Backlog(max_bytes)
    subscriptions = [hub.subscribe(s) for s in streams]
    tasks: list[asyncio.Task[None]] = []
    try:
        for sub in subscriptions:
            await sub.start()  # every event after `ready` reaches this stream
        tasks = [asyncio.create_task(_pump(sub, out)) for sub in subscriptions]
        yield b"retry: %d\n\n" % _RETRY_MS
        yield _frame("ready", json_bytes({"queues": queues}))
        while True:
            try:
                item = await asyncio.wait_for(out.items.get(), timeout=keepalive_s)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if isinstance(item, _Closed):
                return  # the process is stopping: the client reconnects (and re-reads what it shows)
            if item is None:
                yield _frame("resync", b"{}")
                continue
            queue, event, size = item
            out.took(size)
            body = event_out(event, show_data=show_data)
            body["queue"] = queue_of_stream(queue)
            yield _frame(event.type, json_bytes(body))
    finally:
        # No await that can suspend here: under a cancelled task group every such await raises at once,
        # so a subscription closed after one would stay open. aclose() never suspends.
        for sub in subscriptions:
            await sub.aclose()
        for task in tasks:
            task.cancel()


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses=stream_responses(
        "An event stream (text/event-stream); each event's data names its `queue`", 401, 403, 404, 422, 429, 503
    ),
    summary="Follow the events of several queues as Server-Sent Events (no resume)",
)
async def live_events(
    request: Request,
    principal: ReadKey,
    queue: Annotated[
        list[str],
        Query(
            max_length=MAX_QUEUES,
            description=f"Queues to follow (repeat the parameter); none: every queue in Redis, at most {MAX_QUEUES}.",
        ),
    ] = [],  # noqa: B006 — FastAPI copies the default per request
) -> Response:
    state = get_state(request)
    stopping(state)
    if queue:
        names = sorted(set(queue))
        for name in names:
            await state.existing_queue(name)  # 404 for an unknown queue, 422 for a bad name
    else:
        names = (await queue_names(state.client, state.prefix, state.conveyor.queue_configs))[:MAX_QUEUES]
    if not names:
        raise ApiError(404, "there is no queue to follow yet")
    # Redis answers now, or this is a 503: once the stream's 200 has gone out, a Redis that is down
    # could only break the stream off.
    await state.client.ping()
    if is_head(request):
        state.streams.check(principal.key_id)
        return stream_head()
    # Every read before the slot is taken: a fault after it would be a 503 that keeps the slot.
    streams = [stream_name(p) for n in names for p in parts_of(await state.opened(n))]
    state.streams.take(principal.key_id)
    keepalive_s = max(0.05, state.settings.api_sse_keepalive_s)
    show = principal.can(KeyScope.READ_DATA)
    needs = frozenset({KeyScope.READ, KeyScope.READ_DATA} if show else {KeyScope.READ})
    stream = _follow(state.hub, names, streams, keepalive_s, show, state.settings.api_sse_buffer_bytes)
    return HeldStream(
        stream,
        lambda: state.streams.give_back(principal.key_id),
        max_s=state.settings.api_sse_max_s,
        allowed=key_recheck(state, principal, needs),
        recheck_s=recheck_every_s(state),
        media_type="text/event-stream",
        headers=STREAM_HEADERS,
    )
