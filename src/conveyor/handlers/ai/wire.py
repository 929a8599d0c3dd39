"""The providers' HTTP transport: every answer body is bounded while it is read.

The SDK reads a whole answer (and any error body) into memory before looking at it, so a provider
that sends an enormous or endless body would be read until `timeout_s` passed, at the link's speed.
This transport wraps the SDK's connection pool and counts the decoded bytes as they arrive: a body
over `MAX_BODY_BYTES` (or announced over it by Content-Length) fails the read with `AnswerTooLarge`
at once, and the connection is closed. Compressed bodies are inflated here, by the same bounded
inflater as the other handlers' downloads (one gzip or deflate layer), so no bomb gets past the count.
Server-sent event streams are read as they come (their answer is bounded in streaming.py), at most
`MAX_STREAM_BYTES` in all, and no line of them over `MAX_BODY_BYTES`: the SDK holds a line until it
ends, so a line that never ends was read into memory until `timeout_s` passed.
"""

from __future__ import annotations

import json
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


class AnswerTooLarge(BrokenAnswer):
    """A provider's answer body passed `MAX_BODY_BYTES`."""


def _too_large(limit: int) -> AnswerTooLarge:
    return AnswerTooLarge(f"the answer body passed {limit} bytes")


class _CappedBody(httpx.AsyncByteStream):
    """The decoded body of one response; raises AnswerTooLarge past `limit` bytes in all or, when
    `line_limit` is set, past that many bytes without a line break."""

    def __init__(
        self, raw: httpx.AsyncByteStream, inflater: Inflater | None, limit: int, line_limit: int | None = None
    ) -> None:
        self.raw = raw
        self.inflater = inflater
        self.limit = limit
        self.line_limit = line_limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = line = 0
        async for chunk in self.raw:
            for data in [chunk] if self.inflater is None else self.inflater.pieces(chunk, _STEP):
                size += len(data)
                if size > self.limit:
                    raise _too_large(self.limit)
                if self.line_limit is not None:
                    end = max(data.rfind(b"\n"), data.rfind(b"\r"))
                    line = line + len(data) if end < 0 else len(data) - end - 1
                    if line > self.line_limit:
                        raise AnswerTooLarge(f"a line of the event stream passed {self.line_limit} bytes")
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
