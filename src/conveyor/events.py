"""Queue events as read from the per-queue stream, and the per-queue events modes (docs/events.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

# The bytes of a job's value (progress JSON, log line, output piece) one event carries; a larger
# value stays on the job record and its event carries `size` instead (lua/includes/common.lua's
# EVENT_VALUE_MAX: the two must agree). Bounds the stream at about maxlen * (this + ~150) bytes.
EVENT_VALUE_BYTES = 1024
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


def event_head(text: str) -> str:
    """`text` as an event carries it: whole when it fits EVENT_VALUE_BYTES as UTF-8, else its first
    bytes cut on a character boundary."""
    if len(text) * 4 <= EVENT_VALUE_BYTES:
        return text
    return text.encode("utf-8", "ignore")[:EVENT_VALUE_BYTES].decode("utf-8", "ignore")


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
