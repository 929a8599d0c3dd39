"""Noticing that an HTTP client went away while a handler waits (long-polls): the wait stops then,
so nothing keeps running on the server for a caller that fired and forgot.

The wait is not cancelled from outside: a cancellation can be lost on its way (Python 3.11's
`wait_for` returns a result that arrived with it), and a lost one left a long-poll following its
queue for up to its whole timeout. Instead the disconnect closes what the wait reads from (a hub
subscription, synchronously), and the wait sees it closed at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import Request


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def _disconnected(request: Request) -> None:
    # A GET's (empty) body comes first; after it the server's receive() only returns on disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


@contextlib.asynccontextmanager
async def closing_on_disconnect(request: Request, close: Callable[[], None]) -> AsyncIterator[None]:
    """Within the block, call `close()` (synchronous) as soon as the client disconnects."""

    def _on_end(watch: asyncio.Task[None]) -> None:
        if watch.cancelled():
            return  # the block ended first
        watch.exception()  # a broken receive is a client gone too (and the error is retrieved)
        close()

    watch = asyncio.ensure_future(_disconnected(request))
    watch.add_done_callback(_on_end)
    try:
        yield
    finally:
        watch.cancel()
