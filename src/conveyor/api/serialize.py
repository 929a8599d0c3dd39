"""Job records and queue events as the API shows them: payloads withheld without read-data, stack
traces (server paths, code) withheld from every key but admin.

The views themselves live in `conveyor.views`, shared with the CLI so the field names cannot drift.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote_to_bytes

from conveyor.job import JobRecord
from conveyor.queue import Queue
from conveyor.views import TRACE_FIELDS, job_view, jobs_view
from conveyor.views import event_view as event_out


def job_path(root: str, queue: str, job_id: str) -> str:
    return f"{root}/api/jobs/{queue}/{quote(job_id, safe='')}"


def job_out(
    rec: JobRecord, *, show_data: bool, show_trace: bool = False, due_ms: int | None = None
) -> dict[str, Any]:
    """The API's job JSON; the error's stack trace is kept only with `show_trace` (admin keys)."""
    return job_view(rec, show_data=show_data, show_trace=show_trace, due_ms=due_ms)


async def jobs_out(
    queue: Queue, records: list[JobRecord], *, show_data: bool, show_trace: bool = False
) -> list[dict[str, Any]]:
    return await jobs_view(queue, records, show_data=show_data, show_trace=show_trace)


__all__ = ["TRACE_FIELDS", "event_out", "job_out", "job_path", "jobs_out"]


def suffix_in_id(request: Any, suffix: str) -> bool:
    """Whether the `/<suffix>` a route matched was sent percent-encoded (`.../rep%2Fwait`): it is then
    the end of the job id (`rep/wait`, as `job_path` encodes it), not the route's suffix. The server
    decodes `%2F` before routing, so only the raw path tells the two apart."""
    raw = request.scope.get("raw_path")
    if not isinstance(raw, bytes | bytearray):
        return False
    last = bytes(raw).split(b"?", 1)[0].rsplit(b"/", 1)[-1]
    return unquote_to_bytes(last) != suffix.encode()
