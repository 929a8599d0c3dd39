"""The providers' HTTP transport: every answer body is bounded while it is read.

The SDK reads a whole answer (and any error body) into memory before looking at it, so a provider
that sends an enormous or endless body would be read until `timeout_s` passed, at the link's speed.
This transport wraps the SDK's connection pool and counts the decoded bytes as they arrive: a body
over `MAX_BODY_BYTES` (or announced over it by Content-Length) fails the read with `AnswerTooLarge`
at once, and the connection is closed. Compressed bodies are inflated here, by the same bounded
inflater as the other handlers' downloads (one gzip or deflate layer), so no bomb gets past the count.
Server-sent event streams are read as they come (their answer is bounded in streaming.py), at most
`MAX_STREAM_BYTES` in all, and no line or event of them over `MAX_BODY_BYTES` nor an event over
`MAX_EVENT_LINES` lines: the SDK holds an event (each data line a string) until the blank line that
ends it, so an event that never ends was read into memory up to the stream's limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx

from conveyor.handlers.ai.streaming import MAX_ANSWER_CHARS, BrokenAnswer
from conveyor.handlers.bodies import ACCEPT_ENCODING, Inflater, inflater_for

# A whole answer carries at most MAX_ANSWER_CHARS characters of text; 8 bytes a character leave room
# for JSON escapes (`\uXXXX` is 6 bytes) and the envelope around the text.
MAX_BODY_BYTES = 8 * MAX_ANSWER_CHARS
# An event stream spends about 50 bytes of framing on each few characters of text: 64 bytes a
# character bound a stream of the largest answer (and of a provider sending empty chunks forever).
MAX_STREAM_BYTES = 64 * MAX_ANSWER_CHARS
_STEP = 1024 * 1024  # bytes inflated at a time
# Lines one event of a stream may have: the SDK keeps each data line of an event as a string of its
# own until the blank line that ends the event (a provider sends one or a few).
MAX_EVENT_LINES = 1024
_BREAK = re.compile(rb"\r\n|\r|\n")


class AnswerTooLarge(BrokenAnswer):
    """A provider's answer body passed `MAX_BODY_BYTES`."""


def _too_large(limit: int) -> AnswerTooLarge:
    return AnswerTooLarge(f"the answer body passed {limit} bytes")


class _Events:
    """Counts an event stream's lines as they arrive: the current line's bytes, and the current
    event's bytes and lines (an event ends at a blank line; CRLF, CR and LF all end a line)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.line = 0
        self.event = 0
        self.lines = 0
        self.cr = False  # the last piece ended with CR: an LF first in the next one belongs to it

    def feed(self, data: bytes) -> None:
        pos = 1 if self.cr and data.startswith(b"\n") else 0
        self.cr = False
        for brk in _BREAK.finditer(data, pos):
            length = self.line + brk.start() - pos
            if length == 0:  # a blank line: the event ends
                self.event = self.lines = 0
            else:
                self.event += length
                self.lines += 1
            self.line, pos = 0, brk.end()
            self.cr = brk.end() == len(data) and brk.group() == b"\r"
            if self.lines > MAX_EVENT_LINES:
                raise AnswerTooLarge(f"an event of the event stream passed {MAX_EVENT_LINES} lines")
        self.line += len(data) - pos
        if self.line > self.limit:
            raise AnswerTooLarge(f"a line of the event stream passed {self.limit} bytes")
        if self.event + self.line > self.limit:
            raise AnswerTooLarge(f"an event of the event stream passed {self.limit} bytes")


class _CappedBody(httpx.AsyncByteStream):
    """The decoded body of one response; raises AnswerTooLarge past `limit` bytes in all or, when
    `line_limit` is set (an event stream), past that many bytes in a line or an event, or past
    MAX_EVENT_LINES lines in an event."""

    def __init__(
        self, raw: httpx.AsyncByteStream, inflater: Inflater | None, limit: int, line_limit: int | None = None
    ) -> None:
        self.raw = raw
        self.inflater = inflater
        self.limit = limit
        self.line_limit = line_limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        events = None if self.line_limit is None else _Events(self.line_limit)
        async for chunk in self.raw:
            for data in [chunk] if self.inflater is None else self.inflater.pieces(chunk, _STEP):
                size += len(data)
                if size > self.limit:
                    raise _too_large(self.limit)
                if events is not None:
                    events.feed(data)
                yield data

    async def aclose(self) -> None:
        await self.raw.aclose()


def _is_event_stream(request: httpx.Request, response: httpx.Response) -> bool:
    """Whether the answer is read as a stream: the request asked for one and the answer is one. (The
    SDK reads any answer to a request that did not ask whole, whatever its Content-Type says.)"""
    media: str = response.headers.get("content-type", "")
    if not media.lower().startswith("text/event-stream"):
        return False
    try:
        body = json.loads(request.content)
    except (ValueError, httpx.RequestNotRead):
        return False
    return isinstance(body, dict) and body.get("stream") is True


class CappedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose whole-body answers are at most `limit` decoded bytes, and whose event
    streams at most `stream_limit` in all with no line over `limit`."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        limit: int = MAX_BODY_BYTES,
        stream_limit: int = MAX_STREAM_BYTES,
    ) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.limit = limit
        self.stream_limit = stream_limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Accept-Encoding"] = ACCEPT_ENCODING  # only what the bounded inflater decodes
        response = await self.inner.handle_async_request(request)
        stream = _is_event_stream(request, response)
        limit = self.stream_limit if stream else self.limit
        try:
            length = int(response.headers.get("content-length") or 0)
        except ValueError:
            length = 0
        try:
            if length > limit:
                raise _too_large(limit)
            inflater = inflater_for(response.headers)
        except BaseException:
            await response.aclose()
            raise
        headers = response.headers.copy()
        if inflater is not None:  # the body is decoded here: httpx must not decode it again
            del headers["content-encoding"]
            headers.pop("content-length", None)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=headers,
            stream=_CappedBody(response.stream, inflater, limit, self.limit if stream else None),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()
