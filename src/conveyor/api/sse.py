"""Server-Sent Events for one job, read from its queue's events stream.

The stream id of each queue event is the SSE `id:`, so a client reconnecting with `Last-Event-ID`
continues right after the last event it saw (no gaps; events of other jobs are skipped). A new
connection starts with a `state` event (the job as it is now, id = the stream position it was read
at). The stream closes after completed, failed, cancelled or removed. A flow root's stream also reports
its descendants' events as `child` frames, after a `children` frame listing them (api/flow_events.py).
The stream closes after completed, failed, cancelled or removed of the job itself. Keep-alive comments go out
every `CONVEYOR_API_SSE_KEEPALIVE_S`; each time the job record is re-checked too, so a finished job
whose end event was trimmed from the capped stream still ends the stream.
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
from conveyor.api.flow_events import FlowFollower
from conveyor.api.keys import Scope
from conveyor.api.schemas import error_responses
from conveyor.api.serialize import event_out, job_out, jobs_out
from conveyor.api.state import ApiState, get_state
from conveyor.job import JobRecord
from conveyor.queue import Queue

router = APIRouter(prefix="/api", tags=["jobs"])
END_EVENTS = frozenset({"completed", "failed", "cancelled", "removed"})
_RETRY_MS = 2000
_BATCH = 500
_FLOW_POLL_MS = 250  # a flow root's stream relays its children's events at least this often


def _frame(event: str, event_id: str, data: Any) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), event.encode(), orjson.dumps(data))


async def _follow(
    state: ApiState, queue: Queue, job_id: str, cursor: str, first: JobRecord | None, show_data: bool,
    flow: FlowFollower | None = None,
) -> AsyncIterator[bytes]:
    yield b"retry: %d\n\n" % _RETRY_MS
    if first is not None:
        (snapshot,) = await jobs_out(queue, [first], show_data=show_data)
        yield _frame("state", cursor, snapshot)
        if first.finished:
            return
    if flow is not None:
        yield await flow.start()
    reader = state.blocking_queue(queue.name)
    keepalive_s = max(0.05, state.settings.api_sse_keepalive_s)
    last_beat = time.monotonic()
    ended: JobRecord | None = None  # set once the record shows the job finished
    gone = False  # set once the record is gone
    while True:
        wait_ms = max(1, int((last_beat + keepalive_s - time.monotonic()) * 1000))
        if flow is not None:
            wait_ms = min(wait_ms, _FLOW_POLL_MS)
        events = await reader.read_events(cursor, count=_BATCH, block_ms=None if ended or gone else wait_ms)
        if flow is not None:
            for frame in await flow.poll():
                yield frame
        for event in events:
            cursor = event.id
            if event.job_id != job_id:
                continue
            yield _frame(event.type, event.id, event_out(event, show_data=show_data))
            if event.type in END_EVENTS:
                return
        caught_up = len(events) < _BATCH
        if (ended or gone) and caught_up:
            # The record says the job ended but the stream, read to its head, has no end event:
            # it was trimmed from the capped stream. The final state closes the stream instead.
            if ended is not None:
                yield _frame("state", cursor, job_out(ended, show_data=show_data))
            return
        if time.monotonic() - last_beat >= keepalive_s:
            last_beat = time.monotonic()
            yield b": keep-alive\n\n"
            if flow is not None:
                await flow.refresh()
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
        Header(alias="Last-Event-ID", pattern=r"^\d{1,20}-\d{1,20}$", description="Resume after this event."),
    ] = None,
) -> StreamingResponse:
    state = get_state(request)
    q = await state.existing_queue(queue)
    cursor = last_event_id if last_event_id is not None else await q.last_event_id()
    record = await q.get_job(job_id)
    if record is None:
        raise ApiError(404, f"job {job_id[:200]!r} not found in queue {queue!r}")
    first = None if last_event_id is not None else record
    show = principal.can(Scope.READ_DATA)
    flow = FlowFollower(state, record, show) if record.children else None
    stream = _follow(state, q, job_id, cursor, first, show, flow)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
