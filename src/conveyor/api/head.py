"""HEAD is served wherever GET is (RFC 9110 §9.3.2): the same status and headers, no body.

FastAPI's routes list only the methods they are declared with, so without this a `HEAD` of a JSON
route was a 405 while Starlette's own routes (static files, `/openapi.json`) served it. A HEAD is
routed as the GET of the same path, in a copy of the scope marked with `HEAD_KEY` (the server keeps
its own scope, which still says HEAD, so it expects no body), and whatever body the route writes is
dropped. A route that would hold something open (an event stream, a long-poll) asks `is_head` and
answers at once, after the checks its GET makes, without opening a stream or taking a slot.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEAD_KEY = "conveyor.head"


def is_head(request: Request) -> bool:
    """Whether this GET is really a HEAD (answer headers only; hold nothing open)."""
    return bool(request.scope.get(HEAD_KEY))


class HeadAsGet:
    """ASGI middleware: a HEAD request runs as the GET of its path, and its body is not sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if message["type"] != "http.response.body":
                await send(message)
            elif not ended:  # the first piece of body ends the answer; the rest is dropped
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET", HEAD_KEY: True}, receive, headers_only)
