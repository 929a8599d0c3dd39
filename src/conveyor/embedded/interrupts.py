"""Hold Ctrl-C, SIGTERM and SIGHUP back over a few steps that must not be cut in the middle.

Starting the embedded server and recording it (state file, lease, handle) are such steps: a
KeyboardInterrupt raised after the fork but before `Popen` returns, or after the server answers but
before a lease names it, loses the only reference to a server that runs in a session of its own, and
nobody would ever stop it. Inside `deferred_interrupts()` the Python handlers of these signals are
swapped for one that only notes the signal; on leaving, the real handlers are put back and called for
each signal noted, in order, so a Ctrl-C takes effect right after the steps instead of inside them.

The signals are not blocked with the signal mask over the steps themselves: a child inherits its
parent's mask, and a server started with SIGTERM blocked would ignore `kill` for the rest of its life.
The mask only makes the swap itself one step. Python runs signal handlers in the main thread only, so
elsewhere nothing can interrupt the steps and nothing needs holding back.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Handler = Callable[[int, FrameType | None], Any]


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Run the block with the stop signals' Python handlers postponed to its end (see the module)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hold = _Hold()
    try:
        with _masked():
            for sig in STOP_SIGNALS:
                handler = signal.getsignal(sig)
                if callable(handler):  # SIG_DFL, SIG_IGN or a handler set from C: left as they are
                    hold.saved[sig] = handler
                    signal.signal(sig, hold)
        yield
    finally:
        with _masked():
            hold.holding = False
            for signum, handler in hold.saved.items():
                signal.signal(signum, handler)
            for signum in hold.noted:  # the first that raises (KeyboardInterrupt) ends the block here
                hold.saved[signum](signum, None)


class _Hold:
    """The stand-in handler: notes each signal while the block runs, passes it on once it is over
    (a thread that does not block the signals may take one while the real handlers are put back)."""

    def __init__(self) -> None:
        self.saved: dict[int, Handler] = {}
        self.noted: list[int] = []
        self.holding = True

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.holding:
            self.noted.append(signum)
        else:
            self.saved[signum](signum, frame)


@contextlib.contextmanager
def _masked() -> Iterator[None]:
    """The stop signals blocked at the C level for a few instructions; a signal that came meanwhile
    is handled when they are unblocked, by whichever Python handler is in place by then."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())  # reads the mask, changes nothing
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
