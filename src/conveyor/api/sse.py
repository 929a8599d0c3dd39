"""Server-Sent Events for one job, served from the process's event hub (api/hub.py).

The stream id of each queue event is the SSE `id:`, so a client reconnecting with `Last-Event-ID`
continues right after the last event it saw (no gaps; events of other jobs are skipped). A new
connection starts with a `state` event (the job as it is now, id = the stream position it was read
at). The stream closes after completed, failed, cancelled or removed. Keep-alive comments go out
every `CONVEYOR_API_SSE_KEEPALIVE_S`; each time the job record is re-checked too, so a finished job
whose end event was trimmed from the capped stream still ends the stream.

Every stream of a process shares one reader per queue, so open streams cost no Redis connection;
a key may hold `CONVEYOR_API_MAX_STREAMS_PER_KEY` of them (429 with Retry-After past it). The
stream ends when the client disconnects (Starlette cancels the generator), which unsubscribes.
Other event types (progress, log, and any a handler emits) pass through with their own `event:`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from conveyor.api.auth import ReadKey
from conveyor.api.errors import ApiError
from conveyor.api.hub import EventHub, parse_stream_id
from conveyor.api.keys import Scope as KeyScope
from conveyor.api.schemas import error_responses
from conveyor.api.serialize import event_out, job_out, jobs_out
from conveyor.api.state import get_state
from conveyor.queue import Queue

router = APIRouter(prefix="/api", tags=["jobs"])
END_EVENTS = frozenset({"completed", "failed", "cancelled", "removed"})
_RETRY_MS = 2000
_ENDED_GRACE_S = 1.0  # after the record shows the end, how long the end event may take to arrive


def frame(event: str, event_id: str, data: Any) -> bytes:
    """One SSE frame (also used by routes of other rooms that stream hub events)."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), event.encode(), orjson.dumps(data))


_frame = frame


async def _follow(
    hub: EventHub, queue: Queue, job_id: str, after: str | None, keepalive_s: float, show_data: bool
) -> AsyncGenerator[bytes, None]:
    yield b"retry: %d\n\n" % _RETRY_MS
    async with hub.subscribe(queue.name, job_id, after=after) as events:
        if after is None:
            # Subscribed first, then read: whatever happens after this snapshot is in `events`.
            record = await queue.get_job(job_id)
            if record is None:
                return
            (snapshot,) = await jobs_out(queue, [record], show_data=show_data)
            yield _frame("state", events.position, snapshot)
            if record.finished:
                return
        cursor = events.position
        ended = False  # the record showed the job finished; its end event gets a short grace
        while True:
            event = await events.next(timeout=_ENDED_GRACE_S if ended else keepalive_s)
            if event is not None:
                cursor = event.id
                yield _frame(event.type, event.id, event_out(event, show_data=show_data))
                if event.type in END_EVENTS:
                    return
                continue
            if ended:
                # The record says the job ended but no end event came: it was trimmed from the
                # capped stream. The final state closes the stream instead.
                record = await queue.get_job(job_id)
                if record is not None:
                    yield _frame("state", cursor, job_out(record, show_data=show_data))
                return
            yield b": keep-alive\n\n"
            record = await queue.get_job(job_id)
            ended = record is None or record.finished


class HeldStream(StreamingResponse):
    """A streaming response that gives its per-key slot back however it ends (sent, failed,
    disconnected, or never started), and closes its generator then: a client that leaves while the
    generator is parked at a `yield` would otherwise leave its subscriptions open until garbage
    collection."""

    def __init__(self, content: AsyncGenerator[bytes, None], release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._content = content
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._content.aclose()
            finally:
                self._release()


@router.get(
    "/jobs/{queue}/{job_id:path}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "An event stream (text/event-stream)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **error_responses(400, 401, 403, 404, 422, 429, 503),
    },
    summary="Follow a job as Server-Sent Events",
)
async def job_events(
    queue: str,
    job_id: str,
    request: Request,
    principal: ReadKey,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=r"^\d{1,20}-\d{1,20}$",
            max_length=41,
            description="Resume after this event (its id: `<ms>-<seq>`, each part below 2**64).",
        ),
    ] = None,
) -> StreamingResponse:
    state = get_state(request)
    if last_event_id is not None and parse_stream_id(last_event_id) is None:
        raise ApiError(400, "Last-Event-ID is not an event id within range (<ms>-<seq>, each below 2**64)")
    q = await state.existing_queue(queue)
    if await q.get_state(job_id) is None:
        raise ApiError(404, f"job {job_id[:200]!r} not found in queue {queue!r}")
    state.streams.take(principal.key_id)
    keepalive_s = max(0.05, state.settings.api_sse_keepalive_s)
    stream = _follow(state.hub, q, job_id, last_event_id, keepalive_s, principal.can(KeyScope.READ_DATA))
    return HeldStream(
        stream,
        lambda: state.streams.give_back(principal.key_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
