"""Job records and queue events as the API shows them (payloads withheld without read-data).

The views themselves live in `conveyor.views`, shared with the CLI so the field names cannot drift.
"""

from __future__ import annotations

from urllib.parse import quote

from conveyor.views import event_view as event_out
from conveyor.views import job_view as job_out
from conveyor.views import jobs_view as jobs_out


def job_path(root: str, queue: str, job_id: str) -> str:
    return f"{root}/api/jobs/{queue}/{quote(job_id, safe='')}"


__all__ = ["event_out", "job_out", "job_path", "jobs_out"]
