"""JSON endpoints the dashboard needs beyond the public API, under /api/dashboard.

They reuse the API's key check and scopes: reads need `read` (payloads and logs also `read-data`),
the one action (remove) needs `admin`. Nothing here is reachable without a Bearer key, which a
browser never attaches by itself, so other sites cannot drive these endpoints.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from conveyor.api.auth import AdminKey, ReadKey
from conveyor.api.errors import ApiError
from conveyor.api.keys import Scope
from conveyor.api.serialize import jobs_out
from conveyor.api.state import get_state
from conveyor.dashboard.bulk import cut_message, filtered
from conveyor.dashboard.bulk import router as bulk_router
from conveyor.dashboard.stats import BUCKET_MS, BUCKETS, queue_history, redis_now_ms
from conveyor.dashboard.timeline import build_timeline, job_events
from conveyor.job import JobState
from conveyor.listing import LISTING_MAX_BYTES, read_page
from conveyor.partitions import parts_of
from conveyor.redis.keys import registry_key
from conveyor.views import queue_names

# Internal to the web UI, so kept out of the public OpenAPI document.
router = APIRouter(prefix="/api/dashboard", tags=["dashboard"], include_in_schema=False)

LOG_LINES_MAX = 1000
JOB_ID_MAX = 200  # the longest id Conveyor accepts (conveyor.options)


def _job_id(job_id: str) -> str:
    if not job_id or len(job_id) > JOB_ID_MAX:
        raise ApiError(404, "job not found")
    return job_id


@router.get("/me", summary="The calling key's id, name and scopes")
async def me(request: Request, principal: ReadKey) -> dict[str, Any]:
    state = get_state(request)
    name = None
    if principal.key_id is not None:
        name = await state.client.hget(state.keys.record_key(principal.key_id), "name")
    return {"key_id": principal.key_id, "name": name, "scopes": sorted(s.value for s in principal.scopes)}


@router.get("/stats", summary="Per-minute completed/failed counts over the last hour, per queue")
async def stats(request: Request, _: ReadKey) -> dict[str, Any]:
    """Every queue in Redis, declared by the app or not."""
    state = get_state(request)
    now = await redis_now_ms(state.client, registry_key(state.prefix))  # each queue's minutes: its node's clock
    queues = {}
    for name in await queue_names(state.client, state.prefix, state.conveyor.queue_configs):
        queues[name] = (await queue_history(await state.existing_queue(name))).to_dict()
    return {"now_ms": now, "bucket_ms": BUCKET_MS, "buckets": BUCKETS, "queues": queues}


@router.get("/find", summary="A job id looked up in every queue")
async def find_job(
    request: Request, principal: ReadKey, id: Annotated[str, Query(min_length=1, max_length=JOB_ID_MAX)],
) -> dict[str, Any]:
    """One EXISTS per queue (per partition), pipelined: bounded by the number of queues."""
    state = get_state(request)
    names = await queue_names(state.client, state.prefix, state.conveyor.queue_configs)
    queues = [await state.opened(name) for name in names]
    async with state.client.pipeline(transaction=False) as pipe:
        for q in queues:
            for part in parts_of(q):  # a partitioned queue: each partition (each its own slot)
                pipe.exists(part.keys.job(id))
        replies = iter(await pipe.execute())
    found = [any([next(replies) for _ in parts_of(q)]) for q in queues]
    matches = []
    for name, hit in zip(names, found, strict=True):
        if hit:
            q = await state.existing_queue(name)
            record = await q.get_job(id)
            if record is not None:
                matches.extend(await jobs_out(
                    q, [record], show_data=principal.can(Scope.READ_DATA), show_trace=principal.can(Scope.ADMIN)
                ))
    return {"jobs": matches}


@router.get("/queues/{queue}/jobs", summary="Jobs of one state filtered by name and group")
async def search_jobs(
    request: Request,
    queue: str,
    principal: ReadKey,
    state: JobState = JobState.WAITING,
    name: Annotated[str, Query(max_length=200)] = "",
    group: Annotated[str, Query(max_length=200)] = "",
    cursor: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 25,
) -> dict[str, Any]:
    """Scans at most SEARCH_SCAN_MAX jobs per call (their names and options only); `next_cursor`
    continues the scan. The matches' records are read within LISTING_MAX_BYTES, as a listing's. On a
    partitioned queue the scan ends where its list cursor does: `cut_at` and `cut_message` (only then) say so."""
    q = await get_state(request).existing_queue(queue)
    matches, positions, next_cursor, cut_at = await filtered(q, state, name, group, cursor, limit)
    show, trace = principal.can(Scope.READ_DATA), principal.can(Scope.ADMIN)
    # The matches' records, within the API's listing bound: past it the page ends at a match.
    page = await read_page(q.name, matches, state, with_data=show, max_bytes=LISTING_MAX_BYTES)
    if page.consumed < len(matches):
        next_cursor, cut_at = positions[page.consumed], None
    jobs = await jobs_out(q, page.records, show_data=show, show_trace=trace)
    out: dict[str, Any] = {"jobs": jobs, "next_cursor": next_cursor}
    if cut_at is not None:  # only then: an uncut reply keeps its two fields
        out |= {"cut_at": cut_at, "cut_message": cut_message(state, cut_at)}
    return out


@router.get("/jobs/{queue}/{job_id:path}/details", summary="A job's logs and attempts timeline")
async def job_details(
    request: Request, queue: str, job_id: str, principal: ReadKey,
) -> dict[str, Any]:
    q = await get_state(request).existing_queue(queue)
    record = await q.get_job(_job_id(job_id))
    if record is None:
        raise ApiError(404, "job not found")
    show = principal.can(Scope.READ_DATA)
    events, truncated = await job_events(q, record)
    timeline = build_timeline(record, events, truncated, show_data=show)
    logs = await q.get_logs(job_id, -LOG_LINES_MAX, -1) if show else None
    return {"logs": logs, "logs_hidden": not show, "timeline": [a.to_dict() for a in timeline.attempts],
            "events": timeline.events, "truncated": truncated}


@router.post("/jobs/{queue}/{job_id:path}/remove", summary="Delete a job that is not active")
async def remove_job(
    request: Request, queue: str, job_id: str, _: AdminKey,
) -> dict[str, Any]:
    q = await get_state(request).existing_queue(queue)
    await q.remove(_job_id(job_id))
    return {"id": job_id, "queue": queue, "removed": True}


router.include_router(bulk_router)
