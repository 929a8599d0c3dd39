"""Server-Sent Events for one job, read from its queue's events stream.

The stream id of each queue event is the SSE `id:`, so a client reconnecting with `Last-Event-ID`
continues right after the last event it saw (no gaps; events of other jobs are skipped). A new
connection starts with a `state` event (the job as it is now, id = the stream position it was read
at). The stream closes after completed, failed, cancelled or removed. A job's streamed output comes
as `output` events (api/output.py: their ids also carry the output the client has, so a resume neither
repeats nor loses a chunk); a new connection gets the output so far right after the `state` event.
Keep-alive comments go out every `CONVEYOR_API_SSE_KEEPALIVE_S`; each time the job record is
re-checked too, so a finished job whose end event was trimmed from the capped stream still ends the stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from conveyor.api.auth import ReadKey
from conveyor.api.errors import ApiError
from conveyor.api.keys import Scope
from conveyor.api.output import EVENT_ID_PATTERN, OutputRelay, split_event_id
from conveyor.api.schemas import error_responses
from conveyor.api.serialize import event_out, job_out, jobs_out
from conveyor.api.state import ApiState, get_state
from conveyor.job import JobRecord
from conveyor.queue import Queue

router = APIRouter(prefix="/api", tags=["jobs"])
END_EVENTS = frozenset({"completed", "failed", "cancelled", "removed"})
_RETRY_MS = 2000
_BATCH = 500


def _frame(event: str, event_id: str, data: Any) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), event.encode(), orjson.dumps(data))


async def _follow(
    state: ApiState, queue: Queue, job_id: str, cursor: str, first: JobRecord | None, relay: OutputRelay
) -> AsyncIterator[bytes]:
    show_data = relay.show_data
    yield b"retry: %d\n\n" % _RETRY_MS
    if first is not None:
        (snapshot,) = await jobs_out(queue, [first], show_data=show_data)
        yield _frame("state", cursor, snapshot)
        for frame_id, data in await relay.catch_up(cursor):
            yield _frame("output", frame_id, data)
        if first.finished:
            return
    reader = state.blocking_queue(queue.name)
    keepalive_s = max(0.05, state.settings.api_sse_keepalive_s)
    last_beat = time.monotonic()
    ended: JobRecord | None = None  # set once the record shows the job finished
    gone = False  # set once the record is gone
    while True:
        wait_ms = max(1, int((last_beat + keepalive_s - time.monotonic()) * 1000))
        events = await reader.read_events(cursor, count=_BATCH, block_ms=None if ended or gone else wait_ms)
        for event in events:
            previous, cursor = cursor, event.id
            if event.job_id != job_id:
                continue
            if event.type == "output":
                for frame_id, data in await relay.on_event(event, previous):
                    yield _frame("output", frame_id, data)
                continue
            if event.type in END_EVENTS:
                for frame_id, data in await relay.catch_up(previous):
                    yield _frame("output", frame_id, data)
            yield _frame(event.type, relay.event_id(event.id), event_out(event, show_data=show_data))
            if event.type in END_EVENTS:
                return
        caught_up = len(events) < _BATCH
        if (ended or gone) and caught_up:
            # The record says the job ended but the stream, read to its head, has no end event:
            # it was trimmed from the capped stream. The final state closes the stream instead.
            if ended is not None:
                for frame_id, data in await relay.catch_up(cursor):
                    yield _frame("output", frame_id, data)
                yield _frame("state", relay.event_id(cursor), job_out(ended, show_data=show_data))
            return
        if time.monotonic() - last_beat >= keepalive_s:
            last_beat = time.monotonic()
            yield b": keep-alive\n\n"
            if caught_up:
                rec = await queue.get_job(job_id)
                ended = rec if rec is not None and rec.finished else None
                gone = rec is None


@router.get(
    "/jobs/{queue}/{job_id:path}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "An event stream (text/event-stream)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **error_responses(401, 403, 404, 422, 429, 503),
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
        Header(alias="Last-Event-ID", pattern=EVENT_ID_PATTERN, description="Resume after this event."),
    ] = None,
) -> StreamingResponse:
    state = get_state(request)
    q = await state.existing_queue(queue)
    attempt = sent = 0
    if last_event_id is not None:
        cursor, attempt, sent = split_event_id(last_event_id)
    else:
        cursor = await q.last_event_id()
    record = await q.get_job(job_id)
    if record is None:
        raise ApiError(404, f"job {job_id[:200]!r} not found in queue {queue!r}")
    first = None if last_event_id is not None else record
    relay = OutputRelay(q, job_id, attempt=attempt, sent=sent, show_data=principal.can(Scope.READ_DATA))
    stream = _follow(state, q, job_id, cursor, first, relay)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
