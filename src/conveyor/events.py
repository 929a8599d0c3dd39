"""Queue events as read from the per-queue stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
