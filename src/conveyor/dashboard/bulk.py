"""Filtered job selections: the search the queue page shows, and bulk retry/remove/promote of every
job it matches (not only the page on screen), in bounded calls the page repeats while `more`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal, NamedTuple

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from conveyor.api.auth import AdminKey
from conveyor.api.errors import ApiError
from conveyor.api.state import get_state
from conveyor.errors import InvalidStateError, JobNotFoundError
from conveyor.job import JobRecord, JobState
from conveyor.listing import Located, read_fields
from conveyor.partitions import queue as partitioned
from conveyor.queue import MAX_LIST_CURSOR, Queue

router = APIRouter()
SEARCH_SCAN_MAX = 5000  # jobs looked at per call
SEARCH_CHUNK = 500
MATCHED_FIELDS = ("name", "opts")  # what the filter looks at (the group is an option)
BULK_MAX = 1000  # jobs acted on per call
Action = Callable[[Queue, str], Awaitable[Any]]
_ACTIONS: dict[str, tuple[set[JobState], Action]] = {
    "retry": ({JobState.FAILED, JobState.CANCELLED}, Queue.retry),
    "remove": ({s for s in JobState if s is not JobState.ACTIVE}, Queue.remove),
    "promote": ({JobState.DELAYED}, Queue.promote),
}


def _matches(rec: JobRecord, needle: str, group: str) -> bool:
    return (not needle or needle in rec.name.casefold()) and (not group or rec.options.get("group") == group)


class Found(NamedTuple):
    """A search call's matches (each with the list position it was found at); `next_cursor`
    continues it; `cut_at`: the list position the search stopped at because the queue lists no
    deeper (a partitioned queue's cursor cap), else None."""

    matches: list[Located]
    positions: list[int]
    next_cursor: int | None
    cut_at: int | None = None


def cursor_cap(q: Queue) -> int:
    """The deepest cursor `q.list_jobs` takes (read at call time: the partitioned cap may change)."""
    return partitioned.MAX_PARTITIONED_LIST_CURSOR if q.partitioned else MAX_LIST_CURSOR


def cut_message(state: JobState, cut_at: int) -> str:
    return (f"search stopped after the first {cut_at:,} {state.value} jobs: a partitioned queue's job list "
            f"is searchable only that deep (the queue's counts give the totals)")


def _continue(cursor: int, cap: int, matches: list[Located], positions: list[int]) -> Found:
    """Continue at `cursor`, or stop there when the queue cannot list from it."""
    return Found(matches, positions, None, cursor) if cursor > cap else Found(matches, positions, cursor)


async def filtered(q: Queue, state: JobState, name: str, group: str, cursor: int, limit: int) -> Found:
    """Jobs of `state` whose name contains `name` (any case) and whose group is `group` (empty: any),
    from offset `cursor`. Looks at most SEARCH_SCAN_MAX jobs per call, reading only their name and
    options (never payloads); the cursor continues. Stops (with `cut_at`) where the queue's list
    cursor ends instead of asking past it, which is refused."""
    needle = name.casefold()
    matches: list[Located] = []
    positions: list[int] = []
    cap = cursor_cap(q)
    offset, scanned = cursor, 0
    while scanned < SEARCH_SCAN_MAX:
        if offset > cap:
            return Found(matches, positions, None, offset)
        located = await q.listed_ids(state, cursor=offset, limit=SEARCH_CHUNK)
        heads = await read_fields(located, MATCHED_FIELDS)
        for i, (loc, head) in enumerate(zip(located, heads, strict=True)):
            if head and _matches(JobRecord.from_hash(q.name, loc[1], head, state), needle, group):
                matches.append(loc)
                positions.append(offset + i)
                if len(matches) == limit:
                    rest = i + 1 < len(located) or len(located) == SEARCH_CHUNK
                    return _continue(offset + i + 1, cap, matches, positions) if rest else Found(
                        matches, positions, None)
        scanned += len(located)
        if len(located) < SEARCH_CHUNK:
            return Found(matches, positions, None)
        offset += SEARCH_CHUNK
    return _continue(offset, cap, matches, positions)


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["retry", "remove", "promote"]
    state: JobState
    name: str = Field("", max_length=200, description="Name contains (any case); empty: any.")
    group: str = Field("", max_length=200, description="Exact group; empty: any.")


async def _act(q: Queue, action: str, job_id: str) -> bool:
    try:
        await _ACTIONS[action][1](q, job_id)
    except (InvalidStateError, JobNotFoundError):
        return False  # changed meanwhile (another operator, a worker)
    return True


@router.post("/queues/{queue}/bulk", summary="Retry, remove or promote every job a filter matches")
async def bulk(queue: str, body: BulkIn, request: Request, _: AdminKey) -> dict[str, Any]:
    """Acts on at most BULK_MAX matching jobs per call: the selection is collected first, then each
    job goes through its own script. `more` is true while matching jobs may remain: call again."""
    states, _fn = _ACTIONS[body.action]
    if body.state not in states:
        raise ApiError(422, f"cannot {body.action} {body.state.value} jobs")
    q = await get_state(request).existing_queue(queue)
    found = await filtered(q, body.state, body.name, body.group, 0, BULK_MAX)  # from 0: within any cap
    ids = [job_id for _, job_id in found.matches]
    done = 0
    for start in range(0, len(ids), 100):
        chunk = ids[start:start + 100]
        done += sum(await asyncio.gather(*(_act(q, body.action, job_id) for job_id in chunk)))
    return {"queue": queue, "action": body.action, "matched": len(ids), "done": done,
            "more": found.next_cursor is not None}


