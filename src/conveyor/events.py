"""Queue events as read from the per-queue stream, and the per-queue events modes (docs/events.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

# A reader marks its queue followed for this long; it refreshes the mark well before it lapses.
FOLLOW_TTL_MS = 60_000
FOLLOW_REFRESH_S = 15.0
# The events a queue in `followed` mode writes only while followed (and never in `none`).
HOT_EVENTS = frozenset({"added", "active", "completed", "progress", "log"})


class EventsMode(enum.StrEnum):
    """Which events a queue writes to its stream (meta field `events`; lua/includes/events.lua).

    ALL: every event (the default). FOLLOWED: the per-job lifecycle events (HOT_EVENTS) only while
    a reader follows the queue; NONE: never those. Rare events (retrying, failed, cancelled, stalled,
    held, removed, ...) are written in every mode."""

    ALL = "all"
    FOLLOWED = "followed"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of `cv:{q}:events`. `id` is the stream id, usable as a resume cursor."""

    id: str
    type: str
    job_id: str | None
    fields: dict[str, str]

    @classmethod
    def from_entry(cls, entry_id: str, values: dict[str, str]) -> Event:
        fields = dict(values)
        kind = fields.pop("ev", "")
        job_id = fields.pop("id", None)
        return cls(entry_id, kind, job_id, fields)

    @property
    def timestamp_ms(self) -> int:
        return int(self.id.split("-", 1)[0])

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "job_id": self.job_id, **self.fields}
