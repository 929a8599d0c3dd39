"""Reading a response body a job aimed at, with a bound on what is decompressed.

httpx inflates a `Content-Encoding: gzip` body one network chunk at a time with no output limit, and
stacks decoders for `gzip, gzip`: a few kilobytes from a hostile server then become gigabytes in
memory before a size cap sees one byte. Here the raw body is inflated by hand, never more than the
caller's limit (plus one byte, to tell that more was there). Only `gzip` and `deflate` are asked for
(`ACCEPT_ENCODING`) and accepted, one layer of them; any other encoding fails the read as a
`httpx.DecodingError`, as a corrupt compressed body does.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator

import httpx

ACCEPT_ENCODING = "gzip, deflate"
_GZIP = frozenset({"gzip", "x-gzip"})


class Inflater:
    """One gzip or deflate layer; `deflate` is zlib-wrapped or, as some servers send it, raw."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.raw_fallback = encoding == "deflate"
        wbits = zlib.MAX_WBITS | 16 if encoding in _GZIP else zlib.MAX_WBITS
        self.inflater = zlib.decompressobj(wbits)

    def inflate(self, data: bytes, room: int) -> bytes:
        """At most `room` bytes inflated from `data` (input left over is dropped: the caller stops)."""
        try:
            out = self.inflater.decompress(data, room)
        except zlib.error as exc:
            if not self.raw_fallback:
                raise httpx.DecodingError(f"cannot decode the {self.encoding} body: {exc}") from None
            self.raw_fallback = False
            self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.inflate(data, room)
        self.raw_fallback = False
        return out

    def pieces(self, data: bytes, step: int) -> Iterator[bytes]:
        """`data` inflated at most `step` bytes at a time, so a caller that stops between two pieces
        never holds more than one (a bomb inflates a thousandfold in one call otherwise)."""
        while data:
            out = self.inflate(data, step)
            tail = self.inflater.unconsumed_tail
            if out:
                yield out
            elif tail == data:  # no progress on this input: nothing more comes out of it
                return
            data = tail


def inflater_for(headers: httpx.Headers) -> Inflater | None:
    """The inflater a response's Content-Encoding calls for (None: identity); DecodingError for any
    encoding but one layer of gzip or deflate."""
    codings = [c.strip().lower() for c in headers.get("content-encoding", "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in (_GZIP | {"deflate"}):
        raise httpx.DecodingError(f"unsupported Content-Encoding {', '.join(codings)[:100]!r}")
    return Inflater(codings[0])


async def iter_capped(response: httpx.Response, limit: int) -> AsyncIterator[bytes]:
    """The decoded body in chunks, `limit + 1` bytes at most in all (then the iteration ends)."""
    inflater = inflater_for(response.headers)
    left = limit + 1
    async for raw in response.aiter_raw():
        chunk = raw[:left] if inflater is None else inflater.inflate(raw, left)
        if chunk:
            left -= len(chunk)
            yield chunk
        if left <= 0:
            return


async def read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of the decoded body and whether more was there (the rest is neither
    downloaded nor decompressed)."""
    chunks = [chunk async for chunk in iter_capped(response, limit)]
    body = b"".join(chunks)
    return body[:limit], len(body) > limit
