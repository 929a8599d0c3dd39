"""Noticing that an HTTP client went away while a handler waits (long-polls): the wait stops then,
so nothing keeps running on the server for a caller that fired and forgot."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def _disconnected(request: Request) -> None:
    # A GET's (empty) body comes first; after it the server's receive() only returns on disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`await work`, cancelled with ClientGone as soon as the client disconnects."""
    job = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((job, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not job.done():
            job.cancel()
    if not job.done() or job.cancelled():
        raise ClientGone
    return job.result()
