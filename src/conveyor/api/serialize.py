"""Job records and queue events as the API shows them: payloads withheld without read-data, stack
traces (server paths, code) withheld from every key but admin."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from conveyor import codec
from conveyor.events import Event
from conveyor.job import JobRecord

TRACE_FIELDS = frozenset({"stack", "traceback"})


def job_path(root: str, queue: str, job_id: str) -> str:
    return f"{root}/api/jobs/{queue}/{quote(job_id, safe='')}"


def job_out(rec: JobRecord, *, show_data: bool, show_trace: bool = False) -> dict[str, Any]:
    out = rec.to_dict()
    out["data_hidden"] = not show_data
    if not show_data:
        out["data"] = None
        out["result"] = None
    if not show_trace and isinstance(out.get("error"), dict):
        out["error"] = {k: v for k, v in out["error"].items() if k not in TRACE_FIELDS}
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
