"""Job endpoints: enqueue (single and bulk), read, long-poll, cancel, retry, promote.

Routes whose path ends in a suffix are declared before the bare `{job_id:path}` ones, so ids that
contain '/' still route correctly.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from conveyor import resend
from conveyor.api.auth import AdminKey, EnqueueKey, Principal, ReadKey, bearer_principal, current_scopes
from conveyor.api.body import read_json
from conveyor.api.disconnect import ClientGone, closing_on_disconnect
from conveyor.api.enqueue import build_bulk, build_spec
from conveyor.api.errors import ApiError
from conveyor.api.fastpath import fast_route, plain_headers
from conveyor.api.head import is_head
from conveyor.api.keys import Scope
from conveyor.api.responses import JSONBody
from conveyor.api.schemas import BulkOut, EnqueuedOut, JobActionOut, JobOut, error_responses
from conveyor.api.serialize import job_path, jobs_out, suffix_in_id
from conveyor.api.sse import END_EVENTS, stopping
from conveyor.api.state import ApiState, get_state
from conveyor.job import Job, JobRecord, JobState, stored_state
from conveyor.options import JobSpec
from conveyor.partitions import part_holding, stream_name
from conveyor.queue import Queue

router = APIRouter(prefix="/api", tags=["jobs"])
_IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:@/+=-]{1,190}$"
_IDEMPOTENCY_KEY = re.compile(_IDEMPOTENCY_KEY_PATTERN.strip("^$"))
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=_IDEMPOTENCY_KEY_PATTERN,  # bulk jobs get `<key>:<index>`, within the 200 of an id
        description="Makes the call safe to repeat.",
    ),
]
_ENQ_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)
_READ_ERRORS = error_responses(401, 403, 404, 422, 429, 503)
_ACT_ERRORS = error_responses(401, 403, 404, 409, 422, 429, 503)


def _enqueue_body(schema: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }


async def _states_of_existing(queue: Queue, specs: list[JobSpec], jobs: list[Job[Any]]) -> dict[str, JobState]:
    """Current states of jobs an idempotent repeat returned, and of keyed jobs (whose delay the add
    script sets), in one round trip."""
    existing = [
        job for spec, job in zip(specs, jobs, strict=True)
        if not job.created or spec.options.merged_over(queue.defaults).key
    ]
    if not existing:
        return {}
    async with queue.client.pipeline(transaction=False) as pipe:
        for job in existing:  # job.queue: the job's partition when the queue is partitioned
            pipe.hget(job.queue.keys.job(job.id), "state")
        states = await pipe.execute()
    return {j.id: stored_state(s, queue.name, j.id) for j, s in zip(existing, states, strict=True)}


async def _enqueued(
    request: Request, queue: Queue, specs: list[JobSpec], jobs: list[Job[Any]]
) -> list[dict[str, Any]]:
    root = request.scope.get("root_path", "")
    known = await _states_of_existing(queue, specs, jobs)
    out = []
    for spec, job in zip(specs, jobs, strict=True):
        if job.id in known:
            state = known[job.id]
        else:
            delayed = spec.options.merged_over(queue.defaults).delay_ms() > 0
            state = JobState.DELAYED if delayed else JobState.WAITING
        url = job_path(root, queue.name, job.id)
        out.append(
            {
                "id": job.id,
                "queue": queue.name,
                "state": state.value,
                "created": job.created,
                "status_url": url,
                "events_url": url + "/events",
            }
        )
    return out


async def enqueue(
    queue: str,
    request: Request,
    principal: EnqueueKey,
    idempotency_key: IdempotencyKey = None,
) -> JSONBody:
    return await _enqueue_one(request, queue, idempotency_key)


async def _enqueue_one(request: Request, queue: str, idempotency_key: str | None) -> JSONBody:
    state = get_state(request)
    q = state.queue(queue)
    body = await read_json(request, state.settings.api_max_body_bytes)
    spec = build_spec(state.conveyor, queue, body, idempotency_key)
    jobs = await q.add_specs([spec])
    (out,) = await _enqueued(request, q, [spec], jobs)
    return JSONBody(out, status_code=202 if out["created"] else 200, headers={"Location": out["status_url"]})


async def _enqueue_plain(request: Request) -> JSONBody | None:
    """`enqueue` for a request with no query string, a bearer key and at most one well-formed
    Idempotency-Key: the same checks and answers, without solving dependencies (api/fastpath.py)."""
    if request.scope["query_string"]:
        return None
    headers = plain_headers(request.scope, b"authorization", b"idempotency-key")
    if headers is None:
        return None
    authorization, idempotency_key = headers
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        return None
    if await bearer_principal(request, authorization, Scope.ENQUEUE) is None:
        return None
    return await _enqueue_one(request, request.path_params["queue"], idempotency_key)


router.add_api_route(
    "/queues/{queue}/jobs",
    enqueue,
    methods=["POST"],
    status_code=202,
    response_model=EnqueuedOut,
    responses={200: {"model": EnqueuedOut, "description": "Idempotent repeat: the first job"}, **_ENQ_ERRORS},
    openapi_extra=_enqueue_body("EnqueueRequest"),
    summary="Enqueue a job",
    route_class_override=fast_route(_enqueue_plain),
)


@router.post(
    "/queues/{queue}/jobs:bulk",
    status_code=202,
    response_model=BulkOut,
    responses={
        200: {"model": BulkOut, "description": "Idempotent repeat: every job already existed"},
        **_ENQ_ERRORS,
    },
    openapi_extra=_enqueue_body("BulkEnqueueRequest"),
    summary="Enqueue up to 1,000 jobs, all or nothing",
)
async def enqueue_bulk(
    queue: str,
    request: Request,
    principal: EnqueueKey,
    idempotency_key: IdempotencyKey = None,
) -> JSONBody:
    """With Idempotency-Key K, job i gets the key `K:i`, so repeating the call enqueues nothing new."""
    state = get_state(request)
    q = state.queue(queue)
    body = await read_json(request, state.settings.api_max_body_bytes)
    specs = build_bulk(state.conveyor, queue, body, idempotency_key)
    jobs = await q.add_specs(specs)
    out = await _enqueued(request, q, specs, jobs)
    return JSONBody({"jobs": out}, status_code=202 if any(j["created"] for j in out) else 200)


async def _record(request: Request, queue: str, job_id: str, principal: Principal) -> dict[str, Any]:
    q = await get_state(request).existing_queue(queue)
    rec = await q.get_job(job_id)
    if rec is None:
        raise ApiError(404, f"job {job_id[:200]!r} not found in queue {queue!r}")
    (out,) = await jobs_out(
        q, [rec], show_data=principal.can(Scope.READ_DATA), show_trace=principal.can(Scope.ADMIN)
    )
    return out


@router.get(
    "/jobs/{queue}/{job_id:path}/wait",
    response_model=JobOut,
    responses=_READ_ERRORS,
    summary="Long-poll until the job ends",
)
async def wait_job(
    queue: str,
    job_id: str,
    request: Request,
    principal: ReadKey,
    timeout: Annotated[float, Query(ge=0, le=300, description="Seconds to wait at most.")] = 30.0,
) -> Any:
    """Returns as soon as the job is completed, failed or cancelled, or with its current state when
    `timeout` passes first (check `state`). Waits are served from the process's event hub (no Redis
    connection is held while waiting), end when the client disconnects, and a key may hold
    `CONVEYOR_API_MAX_WAITS_PER_KEY` of them at once (429 with Retry-After past it)."""
    if suffix_in_id(request, "wait"):  # GET .../<id>%2Fwait: a read of the job `<id>/wait`
        return await _record(request, queue, f"{job_id}/wait", principal)
    state = get_state(request)
    stopping(state)  # a long-poll asked for while the process stops: 503, the client asks another one
    q = await state.existing_queue(queue)
    if is_head(request):  # the job as it is now: a HEAD neither waits nor holds a slot (api/head.py)
        state.waits.check(principal.key_id)
        return await _record(request, queue, job_id, principal)
    with state.waits.holding(principal.key_id):
        try:
            rec = await _until_finished(state, request, q, job_id, timeout)
        except ClientGone:
            return Response(status_code=499)  # nobody reads it; the wait just stops here
    # The key was checked when the wait began; it may have been revoked or narrowed since.
    scopes = await current_scopes(state, principal)
    if scopes is None:
        raise ApiError(401, "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"})
    if Scope.READ not in scopes:
        raise ApiError(403, f"this key lacks the {Scope.READ.value!r} scope")
    if rec is None:
        raise ApiError(404, f"job {job_id[:200]!r} not found in queue {queue!r}")
    # As GET shows the job: due times, and the names and states of a flow parent's children.
    (out,) = await jobs_out(q, [rec], show_data=Scope.READ_DATA in scopes, show_trace=Scope.ADMIN in scopes)
    return out


async def _until_finished(
    state: ApiState, request: Request, q: Queue, job_id: str, timeout: float
) -> JobRecord | None:
    """The record once the job finished, or as it is when `timeout` passes (None: no such job).
    Raises ClientGone once the client disconnects (its subscription is closed at that moment)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    recheck_s = max(0.05, state.settings.api_sse_keepalive_s)
    events = state.hub.subscribe(stream_name(await part_holding(q, job_id)), job_id)
    async with events, closing_on_disconnect(request, events.close):
        rec = await q.get_job(job_id)  # after subscribing: an end after this read is in `events`
        while rec is not None and not rec.finished:
            left = deadline - loop.time()
            if left <= 0:
                return rec
            event = await events.next(timeout=min(left, recheck_s))
            if events.closed:
                if state.hub.draining:  # the process is stopping: answer with the job as it is now
                    return await q.get_job(job_id)
                raise ClientGone
            if event is None or event.type in END_EVENTS:
                # An end event, or a periodic re-read (an end event trimmed from the capped stream).
                rec = await q.get_job(job_id)
        return rec


@router.post(
    "/jobs/{queue}/{job_id:path}/retry",
    response_model=JobActionOut,
    responses=_ACT_ERRORS,
    summary="Retry a failed or cancelled job",
)
async def retry_job(queue: str, job_id: str, request: Request, principal: AdminKey) -> JobActionOut:
    """A job already waiting with no attempt made (a resend after a lost reply) answers 200 too."""
    outcome = await resend.retry_job(await get_state(request).existing_queue(queue), job_id)
    return JobActionOut(id=job_id, queue=queue, state=outcome.state)


@router.post(
    "/jobs/{queue}/{job_id:path}/promote",
    response_model=JobActionOut,
    responses=_ACT_ERRORS,
    summary="Make a delayed job ready now",
)
async def promote_job(queue: str, job_id: str, request: Request, principal: AdminKey) -> JobActionOut:
    await (await get_state(request).existing_queue(queue)).promote(job_id)
    return JobActionOut(id=job_id, queue=queue, state=JobState.WAITING)


# The bare job routes are included last (after the SSE route) because `{job_id:path}` is greedy.
plain_router = APIRouter(prefix="/api", tags=["jobs"])


@plain_router.get(
    "/jobs/{queue}/{job_id:path}", response_model=JobOut, responses=_READ_ERRORS, summary="Read a job"
)
async def get_job(queue: str, job_id: str, request: Request, principal: ReadKey) -> dict[str, Any]:
    return await _record(request, queue, job_id, principal)


@plain_router.delete(
    "/jobs/{queue}/{job_id:path}", response_model=JobActionOut, responses=_ACT_ERRORS, summary="Cancel a job"
)
async def cancel_job(queue: str, job_id: str, request: Request, principal: AdminKey) -> JobActionOut:
    """Waiting or delayed jobs are cancelled at once; for an active job cancellation is requested
    (state stays `active` until the handler stops). An already cancelled job (a resend after a lost
    reply) answers 200 too."""
    outcome = await resend.cancel_job(await get_state(request).existing_queue(queue), job_id)
    return JobActionOut(id=job_id, queue=queue, state=outcome.state)
