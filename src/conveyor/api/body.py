"""Request bodies: a size limit enforced before reading (Content-Length) and while streaming.

The middleware counts the bytes of every body it passes on, so the limit holds for every route, also
those whose body FastAPI reads and parses itself (before any key check) and for bodies streamed
without a Content-Length.
"""

from __future__ import annotations

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
    try:
        value = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise ApiError(400, "the body is not valid JSON") from None
    if isinstance(value, dict | list) and too_deep(value, depth):
        raise ApiError(422, f"the body nests arrays/objects more than {depth} levels deep")
    return value


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
