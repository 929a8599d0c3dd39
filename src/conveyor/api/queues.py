"""Queue endpoints: statistics, pause/resume, paginated listings, bulk retry and purge of failed jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from conveyor.api.auth import AdminKey, ReadKey
from conveyor.api.fanout import each_bounded
from conveyor.api.keys import Scope
from conveyor.api.schemas import (
    JobPageOut,
    PausedOut,
    PurgeOut,
    QueueOut,
    QueuesOut,
    RetryAllOut,
    error_responses,
)
from conveyor.api.serialize import jobs_out
from conveyor.api.state import ApiState, get_state
from conveyor.bulk import retry_failed
from conveyor.job import JobState
from conveyor.listing import LISTING_MAX_BYTES
from conveyor.partitions.queue import MAX_PARTITIONED_LIST_CURSOR
from conveyor.queue import MAX_LIST_CURSOR
from conveyor.views import queue_names, queue_view

router = APIRouter(prefix="/api/queues", tags=["queues"])
_READ = error_responses(401, 403, 404, 422, 429, 503)
# The schema's bound is a plain queue's; a partitioned queue's lower cap depends on the queue, so the
# description states it (a client generated from the document meets it as a documented 422).
CURSOR_DOC = (f"From a previous page's next_cursor. Up to {MAX_LIST_CURSOR:,} on a plain queue and up to "
              f"{MAX_PARTITIONED_LIST_CURSOR:,} on a partitioned queue (each page there is merged from "
              f"every partition): past it, 422 before anything is read.")
_ADMIN = error_responses(401, 403, 404, 422, 429, 503)


async def queue_out(state: ApiState, name: str, max_groups: int = 10) -> dict[str, Any]:
    q = await state.existing_queue(name)
    tasks = (t for (qn, t) in state.conveyor.tasks if qn == name)
    return await queue_view(q, tasks=tasks, max_groups=max_groups, declared=name in state.conveyor.queue_configs)


@router.get("", response_model=QueuesOut, responses=_READ, summary="Every queue the app declares (or in Redis)")
async def list_queues(
    request: Request,
    principal: ReadKey,
    include_all: Annotated[
        bool, Query(alias="all", description="Also every other queue in Redis (declared: false).")
    ] = False,
) -> dict[str, Any]:
    state = get_state(request)
    names = sorted(state.conveyor.queue_configs)
    if include_all:
        names = await queue_names(state.client, state.prefix, names)
    return {"queues": await each_bounded(names, lambda n: queue_out(state, n))}


@router.get("/{queue}", response_model=QueueOut, responses=_READ, summary="Counts, paused flag, throughput")
async def get_queue(queue: str, request: Request, principal: ReadKey) -> dict[str, Any]:
    return await queue_out(get_state(request), queue, max_groups=100)


@router.post("/{queue}/pause", response_model=PausedOut, responses=_ADMIN, summary="Stop handing out jobs")
async def pause_queue(queue: str, request: Request, principal: AdminKey) -> PausedOut:
    await (await get_state(request).existing_queue(queue)).pause()
    return PausedOut(name=queue, paused=True)


@router.post("/{queue}/resume", response_model=PausedOut, responses=_ADMIN, summary="Hand out jobs again")
async def resume_queue(queue: str, request: Request, principal: AdminKey) -> PausedOut:
    await (await get_state(request).existing_queue(queue)).resume()
    return PausedOut(name=queue, paused=False)


@router.get("/{queue}/jobs", response_model=JobPageOut, responses=_READ, summary="List jobs of one state")
async def list_jobs(
    queue: str,
    request: Request,
    principal: ReadKey,
    state: Annotated[JobState, Query(description="Which state to list.")] = JobState.WAITING,
    cursor: Annotated[int, Query(ge=0, le=MAX_LIST_CURSOR, description=CURSOR_DOC)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """Waiting jobs in claim order, delayed by due time, active by lease deadline, finished newest first.
    A page reads at most LISTING_MAX_BYTES of records (payloads only for read-data keys): it ends
    early, with `next_cursor` set, where the next job would pass that."""
    q = await get_state(request).existing_queue(queue)
    show, trace = principal.can(Scope.READ_DATA), principal.can(Scope.ADMIN)
    page = await q.list_jobs(state, cursor=cursor, limit=limit, with_data=show, max_bytes=LISTING_MAX_BYTES)
    return {"jobs": await jobs_out(q, page.jobs, show_data=show, show_trace=trace), "next_cursor": page.next_cursor}


@router.post(
    "/{queue}/failed:retry-all",
    response_model=RetryAllOut,
    responses=_ADMIN,
    summary="Send failed jobs back to waiting",
)
async def retry_all_failed(
    queue: str,
    request: Request,
    principal: AdminKey,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Most jobs retried by this call.")] = 10_000,
) -> RetryAllOut:
    """Works in batches of 100 (oldest first) so Redis is never blocked; call again while
    `remaining` > 0 to go past `limit`."""
    retried, remaining = await retry_failed(await get_state(request).existing_queue(queue), limit)
    return RetryAllOut(queue=queue, retried=retried, remaining=remaining)


@router.delete(
    "/{queue}/failed", response_model=PurgeOut, responses=_ADMIN, summary="Delete every failed job"
)
async def purge_failed(queue: str, request: Request, principal: AdminKey) -> PurgeOut:
    purged = await (await get_state(request).existing_queue(queue)).purge(JobState.FAILED)
    return PurgeOut(queue=queue, purged=purged)
