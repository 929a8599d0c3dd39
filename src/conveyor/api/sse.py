"""Server-Sent Events for one job, served from the process's event hub (api/hub.py).

The stream id of each queue event is the SSE `id:`, so a client reconnecting with `Last-Event-ID`
continues right after the last event it saw (no gaps; events of other jobs are skipped). A new
connection starts with a `state` event (the job as it is now, id = the stream position it was read
at). The stream closes after completed, failed, cancelled or removed. A flow root's stream also relays
its descendants' events as `child` frames, after a `children` frame listing them (api/flow_events.py).
A job's streamed output comes as `output` events (api/output.py: their ids also carry the output the
client has, so a resume neither repeats nor loses a chunk); a new connection gets the output so far
right after the `state` event.
Keep-alive comments go out
every `CONVEYOR_API_SSE_KEEPALIVE_S`; each time the job record is re-checked too, so a finished job
whose end event was trimmed from the capped stream still ends the stream. While Redis is not usable
that re-check is skipped: the stream stays open through a Redis restart or failover and carries on
with the events the hub reads once Redis is back.

Every stream of a process shares one reader per queue, so open streams cost no Redis connection;
a key may hold `CONVEYOR_API_MAX_STREAMS_PER_KEY` of them (429 with Retry-After past it). A stream
re-checks its key (`HeldStream(allowed=...)`) and ends once the key is revoked or loses a scope it
relies on. The
stream ends when the client disconnects (Starlette cancels the generator), which unsubscribes.
Other event types (progress, log, and any a handler emits) pass through with their own `event:`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from conveyor.api.auth import Principal, ReadKey, current_scopes
from conveyor.api.errors import ApiError
from conveyor.api.flow_events import POLL_S, FlowFollower
from conveyor.api.head import is_head
from conveyor.api.hub import EventHub, Subscription, parse_stream_id
from conveyor.api.keys import Scope as KeyScope
from conveyor.api.output import EVENT_ID_PATTERN, OutputRelay, split_event_id
from conveyor.api.responses import JSONBody, json_bytes
from conveyor.api.schemas import error_responses
from conveyor.api.serialize import event_out, job_out, jobs_out, suffix_in_id
from conveyor.api.state import ApiState, get_state
from conveyor.errors import ConnectionFailedError
from conveyor.partitions import part_holding, stream_name
from conveyor.queue import Queue
from conveyor.redis.faults import fault_summary, is_fault

router = APIRouter(prefix="/api", tags=["jobs"])
END_EVENTS = frozenset({"completed", "failed", "cancelled", "removed"})
_RETRY_MS = 2000
_ENDED_GRACE_S = 1.0  # after the record shows the end, how long the end event may take to arrive
# The documented shape of one event of a text/event-stream response (schema checkers validate each
# event against it): `data` is a JSON document as text.
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}

logger = logging.getLogger(__name__)


def stopping(state: ApiState) -> None:
    """A stream asked for while this process stops would end at once: 503, so the client retries
    (another process, or this service once restarted)."""
    if state.hub.draining:
        raise ApiError(503, "this API process is shutting down; retry", headers={"Retry-After": "1"})


def stream_responses(description: str, *errors: int) -> dict[int | str, dict[str, Any]]:
    """The documented answers of an SSE route: its stream of events, then its errors."""
    return {
        200: {"description": description, "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}},
        **error_responses(*errors),
    }

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def stream_head() -> Response:
    """A HEAD of an event stream: the stream's status and headers, with no stream opened and no slot
    taken (api/head.py). No Content-Length, as the stream has none."""
    response = Response(media_type="text/event-stream", headers=STREAM_HEADERS)
    del response.headers["content-length"]
    return response


def frame(event: str, event_id: str, data: Any) -> bytes:
    """One SSE frame (also used by other routes that stream hub events)."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), event.encode(), json_bytes(data))


_frame = frame


async def _follow(
    hub: EventHub, queue: Queue, job_id: str, after: str | None, keepalive_s: float, relay: OutputRelay,
    flow: FlowFollower | None = None, *, show_trace: bool = False,
) -> AsyncGenerator[bytes, None]:
    """`show_trace`: a failed job's stack in its `state` frames (admin keys, as every route shows it)."""
    yield b"retry: %d\n\n" % _RETRY_MS
    inner = _follow_job(hub, queue, job_id, after, keepalive_s, relay, flow, show_trace)
    try:
        async for chunk in inner:
            yield chunk
    finally:
        # Closed here, first: when this generator is closed while parked at its `yield`, the inner one
        # is not closed by the loop, and its hub subscription would stay open until garbage collection.
        # Closing it does not suspend (an unsubscription is synchronous), so it runs even under a
        # cancelled task group.
        await inner.aclose()
        if flow is not None:
            await flow.close()


async def _follow_job(
    hub: EventHub, queue: Queue, job_id: str, after: str | None, keepalive_s: float, relay: OutputRelay,
    flow: FlowFollower | None, show_trace: bool,
) -> AsyncGenerator[bytes, None]:
    show_data = relay.show_data
    stream = stream_name(await part_holding(queue, job_id))  # a partitioned queue: the job's partition
    async with hub.subscribe(stream, job_id, after=after, end_on_overflow=True) as events:
        if after is None:
            # Subscribed first, then read: whatever happens after this snapshot is in `events`.
            record = await queue.get_job(job_id)
            if record is None:
                return
            (snapshot,) = await jobs_out(queue, [record], show_data=show_data, show_trace=show_trace)
            yield _frame("state", events.position, snapshot)
            for frame_id, data in await relay.catch_up(events.position):
                yield _frame("output", frame_id, data)
            if flow is not None and (chunk := await flow.update(record)) is not None:
                yield chunk  # a flow root: its tree as it is now (then its children's events)
            if record.finished:
                return
        cursor = events.position
        ended = False  # the record showed the job finished; its end event gets a short grace
        beat = asyncio.get_running_loop().time()
        while True:
            wait = _ENDED_GRACE_S if ended else keepalive_s
            if flow is not None and flow.active:
                event = await events.next(timeout=min(wait, POLL_S))
                if events.closed:
                    # The process is stopping (hub.drain), or the client fell too far behind: it
                    # resumes with Last-Event-ID.
                    _ending(events)
                    return
                for chunk in await flow.poll():
                    yield chunk
                if event is None and asyncio.get_running_loop().time() - beat < wait:
                    continue
                beat = asyncio.get_running_loop().time()
            else:
                event = await events.next(timeout=wait)
                if events.closed:
                    _ending(events)
                    return
            if event is not None:
                previous, cursor = cursor, event.id
                if event.type == "output":
                    for frame_id, data in await relay.on_event(event, previous):
                        yield _frame("output", frame_id, data)
                    continue
                if event.type in END_EVENTS:  # first the output the client still lacks
                    for frame_id, data in await relay.catch_up(previous):
                        yield _frame("output", frame_id, data)
                data = event_out(event, show_data=show_data)
                if event.type == "progress" and "progress" not in event.fields:
                    data["progress"] = await _recorded_progress(queue, job_id)
                yield _frame(event.type, relay.event_id(event.id), data)
                if event.type in END_EVENTS:
                    return
                if flow is not None and flow.may_have_grown(event):
                    record = await queue.get_job(job_id)
                    if record is not None and (chunk := await flow.update(record)) is not None:
                        yield chunk
                continue
            if ended:
                # The record says the job ended but no end event came: it was trimmed from the
                # capped stream. The final state closes the stream instead.
                record = await queue.get_job(job_id)
                if record is not None:
                    for frame_id, data in await relay.catch_up(cursor):
                        yield _frame("output", frame_id, data)
                    final = job_out(record, show_data=show_data, show_trace=show_trace)
                    yield _frame("state", relay.event_id(cursor), final)
                return
            yield b": keep-alive\n\n"
            try:
                record = await queue.get_job(job_id)
                update = None if flow is None or record is None else await flow.update(record)
            except Exception as exc:
                if not (isinstance(exc, ConnectionFailedError) or is_fault(exc)):
                    raise
                # Redis is not usable now (down, restarting, failing over): the stream stays open and
                # the hub resumes by itself, so the client misses nothing; the next keep-alive re-checks.
                continue
            if update is not None:
                yield update
            ended = record is None or record.finished


async def _recorded_progress(queue: Queue, job_id: str) -> Any:
    """The job's progress as recorded: a progress event too large for the stream carries only its size."""
    record = await queue.get_job(job_id)
    return None if record is None else record.progress


def _ending(events: Subscription) -> None:
    if events.overflowed:
        logger.info("an event stream's client fell over %d events or %d bytes behind; the stream ends and "
                    "the client resumes with Last-Event-ID", events.limits[0], events.limits[1])


async def _ending_on_faults(content: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """`content` until a Redis fault inside it (a read other than the keep-alive's, which rides faults
    out): the stream then ends cleanly, and the client resumes with Last-Event-ID once Redis serves
    again, rather than seeing the body break off mid-chunk."""
    try:
        async for chunk in content:
            yield chunk
    except Exception as exc:
        if not (isinstance(exc, ConnectionFailedError) or is_fault(exc)):
            raise
        logger.warning("an event stream ended on a Redis fault (%s); its client resumes with Last-Event-ID",
                       fault_summary(exc))


async def _for_at_most(content: AsyncGenerator[bytes, None], max_s: float) -> AsyncGenerator[bytes, None]:
    """`content` until `max_s` seconds have passed (checked at each frame; keep-alives come every
    CONVEYOR_API_SSE_KEEPALIVE_S): the stream then ends and the client resumes with Last-Event-ID."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_s
    async for frame in content:
        yield frame
        if loop.time() >= deadline:
            return


async def _while_allowed(
    content: AsyncGenerator[bytes, None], allowed: Callable[[], Awaitable[bool]], every_s: float
) -> AsyncGenerator[bytes, None]:
    """`content` while `allowed()` holds, asked before a frame goes out once `every_s` seconds have
    passed since the last answer (keep-alives come every CONVEYOR_API_SSE_KEEPALIVE_S, so a quiet
    stream is checked too). A fault while asking is no answer: the stream goes on and asks again at
    its next frame."""
    loop = asyncio.get_running_loop()
    due = loop.time() + every_s
    async for chunk in content:
        if loop.time() >= due:
            try:
                if not await allowed():
                    return
            except Exception as exc:
                if not (isinstance(exc, ConnectionFailedError) or is_fault(exc)):
                    raise
            else:
                due = loop.time() + every_s
        yield chunk


def key_recheck(state: ApiState, principal: Principal, needs: frozenset[KeyScope]) -> Callable[[], Awaitable[bool]]:
    """Whether `principal`'s key still holds every scope in `needs` (api/auth.current_scopes)."""

    async def allowed() -> bool:
        scopes = await current_scopes(state, principal)
        return scopes is not None and needs <= scopes

    return allowed


def recheck_every_s(state: ApiState) -> float:
    """How often a held stream asks whether its key still holds: the key cache's time, at least 1 s."""
    return max(1.0, state.settings.api_key_cache_s)


class HeldStream(StreamingResponse):
    """A streaming response that gives its per-key slot back however it ends (sent, failed,
    disconnected, or never started), and closes its generator then: a client that leaves while the
    generator is parked at a `yield` would otherwise leave its subscriptions open until garbage
    collection."""

    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        release: Callable[[], None],
        max_s: float = 0.0,
        allowed: Callable[[], Awaitable[bool]] | None = None,
        recheck_s: float = 1.0,
        **kwargs: Any,
    ) -> None:
        """`allowed`: asked every `recheck_s` seconds (at a frame); the stream ends once it says no."""
        body = _ending_on_faults(content)
        body = body if allowed is None else _while_allowed(body, allowed, recheck_s)
        super().__init__(_for_at_most(body, max_s) if max_s > 0 else body, **kwargs)
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
    responses=stream_responses("An event stream (text/event-stream)", 400, 401, 403, 404, 422, 429, 503),
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
            pattern=EVENT_ID_PATTERN,  # bounds the length too (64 characters at most)
            description="Resume after this event (its id: `<ms>-<seq>`, each part below 2**64, then for "
            "a job with streamed output `.<attempt>.<bytes>`: what the client has of it).",
        ),
    ] = None,
) -> Response:
    if suffix_in_id(request, "events"):  # GET .../<id>%2Fevents: a read of the job `<id>/events`
        from conveyor.api.jobs import _record  # imported here: jobs imports this module

        return JSONBody(await _record(request, queue, f"{job_id}/events", principal))
    state = get_state(request)
    stopping(state)
    after, attempt, sent = (None, 0, 0) if last_event_id is None else split_event_id(last_event_id)
    if after is not None and parse_stream_id(after) is None:
        raise ApiError(400, "Last-Event-ID is not an event id within range (<ms>-<seq>, each below 2**64)")
    q = await state.existing_queue(queue)
    if await q.get_state(job_id) is None:
        raise ApiError(404, f"job {job_id[:200]!r} not found in queue {queue!r}")
    show, trace = principal.can(KeyScope.READ_DATA), principal.can(KeyScope.ADMIN)
    needs = frozenset({KeyScope.READ, KeyScope.READ_DATA} if show else {KeyScope.READ}) | (
        {KeyScope.ADMIN} if trace else set())  # what the stream shows, the key must still hold
    if is_head(request):
        state.streams.check(principal.key_id)
        return stream_head()
    flow = FlowFollower(state.conveyor, state.hub, show)
    state.streams.take(principal.key_id)
    keepalive_s = max(0.05, state.settings.api_sse_keepalive_s)
    relay = OutputRelay(q, job_id, attempt=attempt, sent=sent, show_data=show)
    stream = _follow(state.hub, q, job_id, after, keepalive_s, relay, flow, show_trace=trace)
    return HeldStream(
        stream,
        lambda: state.streams.give_back(principal.key_id),
        max_s=state.settings.api_sse_max_s,
        allowed=key_recheck(state, principal, needs),
        recheck_s=recheck_every_s(state),
        media_type="text/event-stream",
        headers=STREAM_HEADERS,
    )
