"""HTTP routes for schedules: `GET /api/schedules`, `GET/PUT/DELETE /api/schedules/{id}`.

The API app mounts `make_router(...)` and passes its own dependencies: one that yields a
`ScheduleStore`, the auth checks for reading and for changing schedules, and one that tells whether
the caller may see payloads (a schedule's `data` is a payload: hidden from keys without read-data).
Options are data: a backoff names a policy the application registered, never a function.
"""

import re
from collections.abc import Awaitable, Callable, Container
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Response, status
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from conveyor.errors import BrokenScheduleError, InvalidScheduleError, ScheduleNotFoundError
from conveyor.schedules.model import (
    BUILTIN_IDS,
    MAX_CATCH_UP_CAP,
    MAX_INTERVAL_S,
    MIN_INTERVAL_S,
    MissedPolicy,
    Schedule,
    ScheduleKind,
    check_schedule_id,
)
from conveyor.schedules.store import ScheduleInfo, ScheduleStore

# The OpenAPI document states the id's form; the route still checks it (one message for both).
ScheduleId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
# As on `POST /api/queues/{q}/jobs`: the same form, the same meaning (a resend returns the first job).
RunNowKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", pattern=r"^[A-Za-z0-9._:@/+=-]{1,190}$",
           description="Makes the call safe to send again: a resend returns the first call's job."),
]


def _written_time(value: Any) -> Any:
    """A time as the document states it (ISO 8601 text); the lax datetime also read a number as a Unix
    time (`"start": 0` was 1970-01-01), which no client means."""
    if value is None or (isinstance(value, str) and re.match(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value)):
        return value  # a number in text ("1700000000") is a Unix time to the lax parser too
    raise ValueError("a time is ISO 8601 text with an offset, e.g. 2026-01-01T00:00:00Z")


# Parsed from its text (strict mode takes only datetime objects), and only from text.
WrittenTime = Annotated[datetime | None, Field(strict=False), BeforeValidator(_written_time)]


class ScheduleBody(BaseModel):
    """A schedule as PUT: exactly one of `cron` (with `tz`) or `interval_s`. Strict: a value of
    another JSON type than the document states is a 422 (the lax mode read `"paused": "true"` as a
    flag, `"60"` as a number)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    task: str = Field(min_length=1, max_length=200, description="Job name the workers run.")
    queue: str = Field("default", min_length=1, max_length=100)
    data: Any = Field(None, description="Job data (JSON, at most 64 KiB).")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Job options: priority, delay, attempts, backoff (seconds, \"exponential\", or a "
        "fixed/exponential/named object; never a function), timeout, result_ttl, failed_ttl, group, cost.",
    )
    cron: str | None = Field(None, max_length=200, examples=["0 3 * * *"])
    tz: str = Field("UTC", max_length=64, examples=["Europe/Madrid"])
    interval_s: float | None = Field(
        None, ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S, description="Seconds between runs (instead of cron)."
    )
    start: WrittenTime = None
    end: WrittenTime = None
    paused: bool = False
    missed: Literal["once", "all", "skip"] = "once"
    catch_up_cap: int = Field(100, ge=1, le=MAX_CATCH_UP_CAP)


class LastRunOut(BaseModel):
    tick: datetime | None
    job_id: str | None
    fired: int
    skipped: int
    at: datetime


class ScheduleOut(BaseModel):
    id: str
    kind: str
    source: str
    task: str
    queue: str
    data: Any
    data_hidden: bool = Field(description="True when the key may not see payloads (no read-data scope).")
    options: dict[str, Any]
    cron: str | None
    tz: str
    interval_s: float | None
    start: datetime | None
    end: datetime | None
    paused: bool
    missed: str
    catch_up_cap: int
    next_run: datetime | None
    last_run: LastRunOut | None
    version: int

    @classmethod
    def of(cls, info: ScheduleInfo, *, show_data: bool) -> "ScheduleOut":
        s = info.schedule
        last = info.last_run
        return cls(
            id=s.id, kind=s.kind.value, source=s.source, task=s.task, queue=s.queue,
            data=s.data if show_data else None, data_hidden=not show_data, options=dict(s.options),
            cron=s.cron, tz=s.tz, interval_s=s.interval_s, start=s.start, end=s.end,
            paused=s.paused, missed=s.missed.value, catch_up_cap=s.catch_up_cap, next_run=info.next_run,
            last_run=None if last is None else LastRunOut(
                tick=last.tick, job_id=last.job_id, fired=last.fired, skipped=last.skipped, at=last.at
            ),
            version=info.version,
        )


class RunNowOut(BaseModel):
    id: str
    job_id: str | None


class BrokenScheduleOut(BaseModel):
    id: str
    error: str = Field(description="Why the stored definition cannot be read; a PUT of the id repairs it.")


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]
    broken: list[BrokenScheduleOut] = Field(
        default_factory=list,
        description="Stored schedules that cannot be read (edited by hand); schedulers skip them.",
    )


def _invalid(exc: Exception) -> HTTPException:
    return HTTPException(422, detail=str(exc))


def _not_found(exc: Exception) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))


def _check_backoff(options: dict[str, Any], registered: Container[str]) -> None:
    backoff = options.get("backoff")
    if isinstance(backoff, dict) and backoff.get("type") == "named" and backoff.get("name") not in registered:
        raise HTTPException(422, detail="options.backoff names a policy this application does not register")


def make_router(
    store_factory: Callable[..., Any],
    require_read: Callable[..., Any],
    require_admin: Callable[..., Any],
    shows_data: Callable[..., Any],
    backoffs: Container[str] = frozenset(),
) -> APIRouter:
    """The schedules router. `store_factory` is a FastAPI dependency returning a ScheduleStore;
    `require_read` guards the GETs and `require_admin` the PUT and DELETE; `shows_data` is a
    dependency returning whether the caller may see payloads; `backoffs` holds the names of the
    application's backoff policies (a named backoff must be one of them)."""
    router = APIRouter(prefix="/api/schedules", tags=["schedules"])
    Store = Annotated[ScheduleStore, Depends(store_factory)]
    ShowData = Annotated[bool, Depends(shows_data)]

    def checked_id(schedule_id: str) -> str:
        try:
            return check_schedule_id(schedule_id)
        except InvalidScheduleError as exc:
            raise _invalid(exc) from None

    @router.get("", response_model=ScheduleList, dependencies=[Depends(require_read)])
    async def list_schedules(store: Store, show: ShowData) -> ScheduleList:
        infos, broken = await store.listing()
        return ScheduleList(schedules=[ScheduleOut.of(i, show_data=show) for i in infos],
                            broken=[BrokenScheduleOut(id=b.id, error=b.error) for b in broken])

    @router.get("/{schedule_id}", response_model=ScheduleOut, dependencies=[Depends(require_read)])
    async def get_schedule(schedule_id: ScheduleId, store: Store, show: ShowData) -> ScheduleOut:
        try:
            return ScheduleOut.of(await store.get(checked_id(schedule_id)), show_data=show)
        except ScheduleNotFoundError as exc:
            raise _not_found(exc) from None

    @router.put(
        "/{schedule_id}", response_model=ScheduleOut, dependencies=[Depends(require_admin)],
        responses={201: {"description": "Created"}, 409: {"description": "Built-in schedule"}},
    )
    async def put_schedule(
        schedule_id: ScheduleId, body: ScheduleBody, store: Store, response: Response
    ) -> ScheduleOut:
        try:
            existing = await store.find(checked_id(schedule_id))
            stored = existing is not None
        except BrokenScheduleError:  # a definition edited by hand: the PUT replaces (repairs) it
            existing, stored = None, True
        if schedule_id in BUILTIN_IDS or (existing is not None and existing.schedule.kind is not ScheduleKind.JOB):
            # Even before a scheduler wrote it: its next start would replace the API's schedule.
            raise HTTPException(status.HTTP_409_CONFLICT, detail=f"{schedule_id!r} is a built-in schedule")
        try:
            schedule = Schedule(
                id=schedule_id, task=body.task, queue=body.queue, data=body.data, options=body.options,
                cron=body.cron, tz=body.tz, interval_s=body.interval_s, start=body.start, end=body.end,
                paused=body.paused, missed=MissedPolicy(body.missed), catch_up_cap=body.catch_up_cap,
                source="api",
            )
        except InvalidScheduleError as exc:
            raise _invalid(exc) from None
        _check_backoff(dict(schedule.options), backoffs)
        info = await store.put(schedule)
        response.status_code = status.HTTP_200_OK if stored else status.HTTP_201_CREATED
        return ScheduleOut.of(info, show_data=True)

    async def changed(schedule_id: str, change: Callable[[str], Awaitable[ScheduleInfo]]) -> ScheduleOut:
        try:
            return ScheduleOut.of(await change(checked_id(schedule_id)), show_data=True)  # admin only
        except ScheduleNotFoundError as exc:
            raise _not_found(exc) from None

    @router.post("/{schedule_id}/pause", response_model=ScheduleOut, dependencies=[Depends(require_admin)],
                 summary="Stop a schedule firing (ticks while paused are not run later)")
    async def pause_schedule(schedule_id: ScheduleId, store: Store) -> ScheduleOut:
        return await changed(schedule_id, store.pause)

    @router.post("/{schedule_id}/resume", response_model=ScheduleOut, dependencies=[Depends(require_admin)],
                 summary="Fire a paused schedule again, from its next tick")
    async def resume_schedule(schedule_id: ScheduleId, store: Store) -> ScheduleOut:
        return await changed(schedule_id, store.resume)

    @router.post("/{schedule_id}/run-now", response_model=RunNowOut, dependencies=[Depends(require_admin)],
                 summary="Enqueue one job of the schedule now, besides its ticks")
    async def run_schedule_now(schedule_id: ScheduleId, store: Store, idempotency_key: RunNowKey = None) -> RunNowOut:
        """`job_id` is null for a built-in schedule (maintenance, alerts): a scheduler runs it at its
        next pass. With `Idempotency-Key`, a call sent again within the key's life (one day) returns
        the first call's `job_id` and adds nothing; the host maps a changed schedule's conflict (409)."""
        try:
            job_id = await store.run_now(checked_id(schedule_id), idempotency_key)
            return RunNowOut(id=schedule_id, job_id=job_id)
        except ScheduleNotFoundError as exc:
            raise _not_found(exc) from None

    @router.delete("/{schedule_id}", status_code=204, dependencies=[Depends(require_admin)])
    async def delete_schedule(schedule_id: ScheduleId, store: Store) -> Response:
        try:
            await store.delete(checked_id(schedule_id))
        except ScheduleNotFoundError as exc:
            raise _not_found(exc) from None
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router
