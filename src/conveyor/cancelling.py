"""Cancelling background tasks so that they really end.

On Python 3.11 a cancellation can be lost: `asyncio.wait_for` returns the result of its inner call
when that call finishes in the same event-loop turn as the cancellation arrives, and the cancelled
task goes on as if nothing happened. redis-py wraps every send on a connection with a socket timeout
in `wait_for`, so a loop cancelled while it sends a command may keep running: a `close()` that
cancels its loops once leaves one behind, and an event loop that is being closed waits for it for
ever. Loops are therefore cancelled again until they end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

AGAIN_AFTER_S = 1.0  # a task still running this long after its cancellation is cancelled again


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], timeout: float | None = None, *, again_after_s: float = AGAIN_AFTER_S,
) -> set[asyncio.Future[Any]]:
    """Cancel `tasks` and wait until they have ended, cancelling again any still running after
    `again_after_s`; gives up after `timeout` seconds (None: waits until all have ended). Returns
    the tasks still running. Their results and exceptions are left to the caller."""
    pending = {task for task in tasks if not task.done()}
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        for task in pending:
            task.cancel()
        wait_s = again_after_s if deadline is None else min(again_after_s, deadline - time.monotonic())
        if wait_s <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=wait_s)
    return pending
