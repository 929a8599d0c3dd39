"""A job's attempts rebuilt from its queue's event stream: when each began, how it ended, where it ran.

The stream is shared by the whole queue, so the scan starts at the job's creation time and stops
after a bounded number of entries; a job whose events were trimmed simply shows fewer attempts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conveyor.events import Event
from conveyor.job import JobRecord
from conveyor.partitions import part_holding
from conveyor.queue import Queue
from conveyor.views import DATA_EVENT_FIELDS

SCAN_CHUNK = 1000
SCAN_MAX = 20_000
_ENDINGS = {"completed": "completed", "failed": "failed", "retrying": "retrying", "cancelled": "cancelled",
            "stalled": "stalled"}


@dataclass(slots=True)
class Attempt:
    attempt: int | None
    started_ms: int
    ended_ms: int | None = None
    outcome: str | None = None
    worker: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        duration = None if self.ended_ms is None else self.ended_ms - self.started_ms
        return {"attempt": self.attempt, "started_ms": self.started_ms, "ended_ms": self.ended_ms,
                "duration_ms": duration, "outcome": self.outcome, "worker": self.worker, "error": self.error}


@dataclass(slots=True)
class Timeline:
    attempts: list[Attempt] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"attempts": [a.to_dict() for a in self.attempts], "events": self.events,
                "truncated": self.truncated}


async def job_events(queue: Queue, record: JobRecord) -> tuple[list[Event], bool]:
    """This job's events (oldest first) and whether the scan stopped at its bound."""
    cursor = f"{max(0, (record.created_ms or 0) - 1)}-0"
    found: list[Event] = []
    scanned = 0
    queue = await part_holding(queue, record.id)  # a partitioned queue: the job's own partition
    while scanned < SCAN_MAX:
        entries = await queue.client.xrange(queue.keys.events, min=f"({cursor}" if scanned else cursor,
                                            count=SCAN_CHUNK)
        if not entries:
            return found, False
        scanned += len(entries)
        for entry_id, values in entries:
            event = Event.from_entry(str(entry_id), {str(k): str(v) for k, v in (values or {}).items()})
            if event.job_id == record.id:
                found.append(event)
        cursor = str(entries[-1][0])
        if len(entries) < SCAN_CHUNK:
            return found, False
    return found, True


def build_timeline(record: JobRecord, events: list[Event], truncated: bool, *, show_data: bool) -> Timeline:
    timeline = Timeline(truncated=truncated)
    current: Attempt | None = None
    for event in events:
        f = event.fields
        timeline.events.append({"type": event.type, "at_ms": event.timestamp_ms,
                                **{k: v for k, v in f.items() if show_data or k not in DATA_EVENT_FIELDS}})
        if event.type == "active":
            current = Attempt(_int(f.get("att")), event.timestamp_ms, worker=f.get("worker"))
            timeline.attempts.append(current)
        elif event.type in _ENDINGS and current is not None and current.ended_ms is None:
            current.ended_ms = event.timestamp_ms
            current.outcome = _ENDINGS[event.type]
            current.error = f.get("error") or f.get("reason")
    if timeline.attempts and timeline.attempts[-1].worker is None:
        timeline.attempts[-1].worker = record.worker  # events written before `active` carried the worker
    return timeline


def _int(raw: str | None) -> int | None:
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None
