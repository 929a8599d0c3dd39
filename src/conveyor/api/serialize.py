"""Job records and queue events as the API shows them (payloads withheld without read-data)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from conveyor import codec
from conveyor.events import Event
from conveyor.job import JobRecord, JobState
from conveyor.queue import Queue


def job_path(root: str, queue: str, job_id: str) -> str:
    return f"{root}/api/jobs/{queue}/{quote(job_id, safe='')}"


async def due_times(queue: Queue, records: list[JobRecord]) -> dict[str, int]:
    """When each delayed record becomes ready (its score in the delayed set), in one round trip."""
    delayed = [r.id for r in records if r.state is JobState.DELAYED]
    if not delayed:
        return {}
    async with queue.client.pipeline(transaction=False) as pipe:
        for job_id in delayed:
            pipe.zscore(queue.keys.delayed, job_id)
        scores = await Queue._call(pipe.execute())
    return {i: int(float(s)) for i, s in zip(delayed, scores, strict=True) if s is not None}


async def jobs_out(queue: Queue, records: list[JobRecord], *, show_data: bool) -> list[dict[str, Any]]:
    due = await due_times(queue, records)
    return [job_out(r, show_data=show_data, due_ms=due.get(r.id)) for r in records]


def job_out(rec: JobRecord, *, show_data: bool, due_ms: int | None = None) -> dict[str, Any]:
    """The API's job JSON. `due_ms`: when a delayed job becomes ready; it is also `next_attempt_ms`
    when the job has run before (a retry waiting out its backoff, or a run handed back for later)."""
    out = rec.to_dict()
    out["due_ms"] = due_ms
    out["next_attempt_ms"] = due_ms if due_ms is not None and rec.started_ms is not None else None
    out["data_hidden"] = not show_data
    if not show_data:
        out["data"] = None
        out["result"] = None
    return out


def event_out(event: Event, *, show_data: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"type": event.type, "job_id": event.job_id, "stream_id": event.id}
    for key, value in event.fields.items():
        if key == "progress":
            try:
                out[key] = codec.loads(value)
            except ValueError:
                out[key] = value
        elif key == "line" and not show_data:
            out[key] = None
        else:
            out[key] = value
    return out
