"""A job's streamed output: `GET /api/jobs/{queue}/{id}/output`, and the relay that turns the output
events of a job's SSE stream into frames that never repeat or skip a byte.

Output events in the queue's events stream carry (attempt, byte offset, chunk). The relay remembers
what the client has (attempt and bytes) and puts it in every SSE id after the stream position:
`<stream id>.<attempt>.<bytes>`. A client reconnecting with that `Last-Event-ID` resumes from the
stream position with the relay restored, so chunks it already has are skipped (their offset is
behind) and chunks it lacks - also those trimmed from the capped events stream - are read back from
the stored output (their offset is ahead). A new attempt starts the output again at offset 0.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from conveyor.api.auth import ReadKey
from conveyor.api.errors import ApiError
from conveyor.api.keys import Scope
from conveyor.api.responses import JSONBody
from conveyor.api.schemas import error_responses
from conveyor.api.serialize import suffix_in_id
from conveyor.api.state import get_state
from conveyor.events import Event
from conveyor.queue import Queue
from conveyor.worker.context import MAX_OUTPUT_BYTES

router = APIRouter(prefix="/api", tags=["jobs"])
FRAME_CHARS = 16 * 1024  # output read back from the record goes in frames of at most 64 KiB of UTF-8



def _at_most(bound: int) -> str:
    """A regex for decimal numbers of up to len(str(bound)) ASCII digits whose value is <= bound."""
    digits = str(bound)
    shorter = f"[0-9]{{1,{len(digits) - 1}}}" if len(digits) > 1 else ""
    same_length = []
    for i, d in enumerate(digits):  # the bound's first i digits, then a smaller digit, then anything
        if d != "0":
            rest = len(digits) - i - 1
            same_length.append(digits[:i] + f"[0-{int(d) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    same_length.append(digits)
    return "(?:" + "|".join(([shorter] if shorter else []) + same_length) + ")"


# An SSE id: a stream id (each part below 2**64, as Redis takes it), optionally followed by the output
# the client has (attempt, bytes). The document states the bound, so every id it admits is served.
_PART = _at_most(2**64 - 1)
EVENT_ID_PATTERN = rf"^{_PART}-{_PART}(\.[0-9]{{1,9}}\.[0-9]{{1,12}})?$"
_EVENT_ID = re.compile(EVENT_ID_PATTERN)


class JobOutputOut(BaseModel):
    job_id: str
    queue: str
    text: str | None = Field(description="The output so far; null unless the key has the read-data scope.")
    attempt: int = Field(description="The attempt the output belongs to (0: nothing streamed yet).")
    bytes: int = Field(description="Size of the output in UTF-8 bytes.")
    truncated: bool = Field(description="True when chunks were dropped at the size limit (max_bytes).")
    max_bytes: int = Field(description="The size limit of a job's output.")


@router.get(
    "/jobs/{queue}/{job_id:path}/output",
    response_model=JobOutputOut,
    responses=error_responses(401, 403, 404, 422, 429, 503),
    summary="Read a job's streamed output so far",
)
async def job_output(queue: str, job_id: str, request: Request, principal: ReadKey) -> Any:
    if suffix_in_id(request, "output"):  # GET .../<id>%2Foutput: a read of the job `<id>/output`
        from conveyor.api.jobs import _record  # imported here: jobs imports this module's neighbours

        return JSONBody(await _record(request, queue, f"{job_id}/output", principal))
    q = await get_state(request).existing_queue(queue)
    out = await q.get_output(job_id)
    if out is None:
        raise ApiError(404, f"job {job_id[:200]!r} not found in queue {queue!r}")
    return JobOutputOut(
        job_id=job_id, queue=queue, text=out.text if principal.can(Scope.READ_DATA) else None,
        attempt=out.attempt, bytes=out.size, truncated=out.truncated, max_bytes=MAX_OUTPUT_BYTES,
    )


def split_event_id(value: str) -> tuple[str, int, int]:
    """(stream id, attempt, bytes) of an SSE id this API sent (validated by EVENT_ID_PATTERN)."""
    if not _EVENT_ID.match(value):
        raise ValueError(f"not an event id: {value[:60]!r}")
    stream_id, _, rest = value.partition(".")
    if not rest:
        return stream_id, 0, 0
    attempt, _, size = rest.partition(".")
    return stream_id, int(attempt), int(size)


OutputFrame = tuple[str, dict[str, Any]]  # (SSE id, data) of one `output` frame


class OutputRelay:
    """What one SSE client has of a job's output, and the frames that bring it up to date."""

    __slots__ = ("attempt", "job_id", "queue", "sent", "show_data")

    def __init__(self, queue: Queue, job_id: str, *, attempt: int = 0, sent: int = 0, show_data: bool) -> None:
        self.queue = queue
        self.job_id = job_id
        self.attempt = attempt
        self.sent = sent
        self.show_data = show_data

    def event_id(self, stream_id: str) -> str:
        """The SSE id of a frame sent at stream position `stream_id`."""
        if self.attempt == 0 and self.sent == 0:
            return stream_id
        return f"{stream_id}.{self.attempt}.{self.sent}"

    def _data(self, offset: int, chunk: str | None, truncated: bool = False) -> dict[str, Any]:
        return {
            "type": "output", "job_id": self.job_id, "attempt": self.attempt, "offset": offset,
            "chunk": chunk if self.show_data else None, "truncated": truncated,
        }

    async def catch_up(self, position: str) -> list[OutputFrame]:
        """Frames with the stored output the client lacks; their ids carry `position`, the last stream
        position fully sent, so a client resuming from them re-reads later events (and skips what
        it has)."""
        if not self.show_data:
            return []
        out = await self.queue.get_output(self.job_id, self.sent)
        if out is None or out.attempt == 0:
            return []
        if out.attempt != self.attempt:  # a newer attempt started the output again
            if out.attempt < self.attempt:
                return []
            self.attempt, self.sent = out.attempt, 0
            out = await self.queue.get_output(self.job_id, 0)
            if out is None or out.attempt != self.attempt:
                return []  # yet another attempt in between: the next event or check catches up
        if out.size <= self.sent or not out.text:
            return []
        frames: list[OutputFrame] = []
        for i in range(0, len(out.text), FRAME_CHARS):  # frames of at most 64 KiB, as streamed pieces
            piece = out.text[i : i + FRAME_CHARS]
            offset = self.sent
            self.sent += len(piece.encode())
            frames.append((self.event_id(position), self._data(offset, piece)))
        self.sent = out.size
        return frames

    async def on_event(self, event: Event, previous: str) -> list[OutputFrame]:
        """Frames for one output event of the job (`previous`: the stream position before it)."""
        try:
            attempt, offset = int(event.fields.get("att", "0")), int(event.fields.get("off", "0"))
        except ValueError:
            return []
        chunk = event.fields.get("chunk", "")
        if attempt < self.attempt:
            return []  # an earlier attempt's output, replaced since
        if attempt > self.attempt:
            self.attempt, self.sent = attempt, 0
        frames: list[OutputFrame] = []
        if not self.show_data:
            frames.append((self.event_id(event.id), self._data(offset, None, event.fields.get("trunc") == "1")))
            return frames
        if "chunk" not in event.fields:  # a piece too large for an event: read back from the output
            return frames + await self.catch_up(event.id)
        if offset > self.sent:
            frames += await self.catch_up(previous)
            if attempt != self.attempt:
                return frames
        if event.fields.get("trunc") == "1":
            frames.append((self.event_id(event.id), self._data(self.sent, "", truncated=True)))
            return frames
        data = chunk.encode()
        end = offset + len(data)
        if end <= self.sent or offset > self.sent:
            return frames  # already sent (or the record is gone and could not be read back)
        piece = data[self.sent - offset :].decode(errors="ignore")
        start, self.sent = self.sent, end
        frames.append((self.event_id(event.id), self._data(start, piece)))
        return frames
