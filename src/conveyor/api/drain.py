"""Ending event streams and long-polls as soon as the process is asked to stop.

uvicorn tells the application nothing when SIGINT/SIGTERM arrives: it stops accepting connections,
waits up to its graceful timeout for open responses to finish, then cancels them (the client of a
long-poll got a bare 500, an event stream was cut mid-chunk, and each cancelled request logged a
traceback). Under `conveyor api` the API's lifespan puts a handler in front of the server's own for
those signals: it drains the event hub (api/hub.py), so every SSE stream ends cleanly at once (its
client resumes elsewhere with Last-Event-ID) and every long-poll answers with the job as it is, and
then hands the signal to the server as before. Inside another application's server (`mount`) the
host owns its signals and nothing is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def draining_on_exit_signals(drain: Callable[[], None]) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM first schedule `drain()` on the running loop, then reach
    whatever handled them before (uvicorn's shutdown). Outside the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(drain)
        before = previous.get(signal.Signals(signum))
        if callable(before):
            before(signum, frame)
        elif before != signal.SIG_IGN:  # the default action (or an unknown handler): as if we were not here
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for sig in EXIT_SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before if before is not None else signal.SIG_DFL)
