"""A small parser for text/event-stream bodies, for the SSE tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: Any


def parse_sse(text: str) -> tuple[list[SseEvent], list[str]]:
    """(events, comments) of a complete stream body."""
    events: list[SseEvent] = []
    comments: list[str] = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line:
                continue
            if line.startswith(":"):
                comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if "data" in fields:
            events.append(
                SseEvent(fields.get("id"), fields.get("event", "message"), json.loads(fields["data"]))
            )
    return events, comments
