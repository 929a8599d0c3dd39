"""Request bodies: a size limit enforced before reading (Content-Length) and while streaming, and one
JSON parser that refuses an object with a repeated key.

The middleware counts the bytes of every body it passes on, so the limit holds for every route, also
those whose body FastAPI reads and parses itself (before any key check) and for bodies streamed
without a Content-Length.

JSON parsers keep the last of repeated keys, so `{"name": "a", "name": "b"}` would enqueue `b` while
a proxy or log that reads the first saw `a`. `parse_json` answers 422 naming the key instead, in
linear time: orjson parses, and the body's `:` count against that of orjson's re-encoding of what it
parsed shows whether a pair was dropped; only then (or when `\\u003a` escapes blur the count) a second
pass with the standard parser names the key.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.errors import ApiError, error_response


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body is over the limit of {limit} bytes")


class BodyTooLarge(HTTPException):
    """Raised while a body is received, at the first byte past the limit. An HTTPException, so
    FastAPI's own body reading passes it on and the API's error handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit).message)


class ContentLengthLimit:
    """Refuses a declared Content-Length over the limit before any route (or auth) runs, and stops
    reading a body (streamed or mislabelled) at the first byte over the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if not value.isdigit():
                        response = error_response(400, "Content-Length is not a number")
                        await response(scope, receive, send)
                        return
                    if int(value) > self.limit:
                        err = _too_large(self.limit)
                        await error_response(413, err.message)(scope, receive, send)
                        return
            receive = _counting(receive, self.limit)
        await self.app(scope, receive, send)


def _counting(receive: Receive, limit: int) -> Receive:
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


async def read_json(request: Request, limit: int, max_depth: int | None = None) -> Any:
    """The body parsed as JSON; counts streamed bytes so a chunked body cannot exceed the limit.
    `max_depth`: how deep containers may nest (default MAX_DEPTH; a flow tree nests deeper, and
    checks each node's payload against MAX_DEPTH itself)."""
    depth = MAX_DEPTH if max_depth is None else max_depth
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return parse_json(b"".join(chunks), depth)


def parse_json(raw: bytes, max_depth: int = 0) -> Any:
    """`raw` parsed as JSON: 400 if it is not JSON, 422 if containers nest deeper than `max_depth`
    (0: orjson's own bound) or an object repeats a key."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(value, dict | list):
        return value
    if max_depth and too_deep(value, max_depth):
        raise ApiError(422, f"the body nests arrays/objects more than {max_depth} levels deep")
    if _may_repeat_keys(raw, value) and (key := repeated_key(raw)) is not None:
        raise _repeated(key)
    return value


def _may_repeat_keys(raw: bytes, value: dict[str, Any] | list[Any]) -> bool:
    """False when no object of `raw` repeats a key. A dropped pair takes at least its own `:` with it,
    and orjson writes every `:` of a string as is, so without repeats the body's colons (plus its
    escaped ones, `\\u003a`) equal those of the re-encoding; with one, the body has more."""
    colons = raw.count(b":")
    if not colons:
        return False
    escaped = raw.count(b"\\u003a") + raw.count(b"\\u003A")
    try:
        again = orjson.dumps(value)
    except orjson.JSONEncodeError:  # a value orjson reads but does not write (an integer over 64 bits)
        return True
    return colons + escaped != again.count(b":")


def _nothing(_: Any) -> None:
    return None


async def refuse_repeated_keys(request: Request) -> None:
    """For a route whose JSON body FastAPI parses itself (a model parameter; the enqueue and flow
    routes use `read_json`): 422 when an object of the body repeats a key. Routes without a body
    model cost nothing here."""
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None:
        return
    ctype = request.headers.get("content-type", "")
    if "json" not in ctype.partition(";")[0].lower() and ctype:
        return  # not parsed as JSON (a form, or bytes its model refuses)
    raw = await request.body()
    if not raw:
        return
    try:  # C speed for the common case: this runs before the key check
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None  # JSON only the standard parser takes (NaN), or not JSON: the exact pass decides
    if value is not None and not (isinstance(value, dict | list) and _may_repeat_keys(raw, value)):
        return
    try:
        key = repeated_key(raw)
    except ValueError:  # not JSON: FastAPI's own parse answers for it
        return
    if key is not None:
        raise _repeated(key)


def _repeated(key: str) -> ApiError:
    return ApiError(
        422, f"the body repeats the key {key[:100]!r} in one object (keys must be unique)",
        details=[{"loc": ["body"], "msg": "repeated key", "key": key[:100]}],
    )


def repeated_key(raw: bytes) -> str | None:
    """The first key some object of `raw` (valid JSON) repeats, or None. Linear: one pass of the
    standard parser that keeps no values."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> None:
        if not found:
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    found.append(key)
                    break
                seen.add(key)

    try:
        json.loads(raw, object_pairs_hook=pairs, parse_int=_nothing, parse_float=_nothing, parse_constant=_nothing)
    except RecursionError:
        raise ApiError(422, "the body nests arrays/objects too deep") from None
    return found[0] if found else None


MAX_DEPTH = 64


def too_deep(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether containers nest more than `limit` levels (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list) and child:
                stack.append((child, depth + 1))
    return False
