"""Threads for sync handlers, and how the worker interrupts one that must stop.

A sync handler runs in one of these threads; its timeout counts from the moment its code starts in
the thread. To stop it (timeout, lost lease, cancellation, shutdown) the worker raises
`JobInterrupted` in that thread with `PyThreadState_SetAsyncExc`, as dramatiq does: Python raises it
at the handler's next bytecode, so a handler blocked inside one C call (a socket read, `time.sleep`)
is interrupted when that call returns. Until its thread really returns, the job keeps its slot.

An interruption can never reach the next job of the same thread: the runner attaches the lease to
the thread under a lock, interrupts only an attached thread under the same lock, and on detaching
clears any interruption still pending before the thread takes more work.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from conveyor.errors import JobInterrupted
from conveyor.worker.lease import Lease

# PyThreadState_SetAsyncExc(thread id, exception class) schedules the exception in that thread;
# with NULL it clears one still pending. Two prototypes, so None means NULL only for the second.
_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))
ThreadResult = tuple[bool, Any]  # (returned normally, return value or exception)


class SyncThreads:
    """Up to `size` daemon threads, started on demand. The worker never gives them more jobs than it
    has slots, and a job holds its slot until its thread returns, so work never waits for a thread."""

    def __init__(self, size: int, name: str = "conveyor-job") -> None:
        self.size = size
        self.name = name
        self._work: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0

    def submit(self, lease: Lease, fn: Callable[..., Any], *args: Any) -> asyncio.Future[ThreadResult]:
        """Run `fn(*args)` for `lease` in a thread; the future resolves when the thread is done with it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ThreadResult] = loop.create_future()
        lease.interrupt = self.interrupt
        with self._lock:
            spawn = self._idle == 0 and len(self._threads) < self.size
            if spawn:
                thread = threading.Thread(target=self._main, name=f"{self.name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
            else:
                self._idle -= 1
        if spawn:
            thread.start()
        self._work.put((lease, fn, args, loop, future))
        return future

    def interrupt(self, lease: Lease) -> bool:
        """Raise JobInterrupted in the thread running `lease`'s handler; False if none runs it now
        (a thread about to start it sees `lease.stop` and does not)."""
        with self._lock:
            ident = lease.thread
            if ident is None:
                return False
            return bool(_set_async_exc(ident, JobInterrupted) == 1)

    def close(self) -> None:
        """Let idle threads exit; a thread still running a handler ends after it (daemon threads)."""
        for _ in self._threads:
            self._work.put(None)

    def _main(self) -> None:
        ident = threading.get_ident()
        while True:
            item = self._work.get()
            if item is None:
                return
            with contextlib.suppress(JobInterrupted):  # cleared on detach; a last guard
                self._run(ident, *item)
            with self._lock:
                self._idle += 1

    def _run(
        self, ident: int, lease: Lease, fn: Callable[..., Any], args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop, future: asyncio.Future[ThreadResult],
    ) -> None:
        result: ThreadResult = (False, JobInterrupted(lease.stop.value if lease.stop else "not started"))
        try:
            with self._lock:
                attached = lease.stop is None
                if attached:
                    lease.thread = ident
                    lease.started_at = time.monotonic()
                    lease.started = True
            if attached:
                try:
                    result = (True, fn(*args))
                except BaseException as exc:
                    result = (False, exc)
        except JobInterrupted as exc:  # arrived between attaching and the call, or right after it
            if result[0] is False:
                result = (False, exc)
        finally:
            self._detach(ident, lease)
        loop.call_soon_threadsafe(_resolve, future, result)

    def _detach(self, ident: int, lease: Lease) -> None:
        while True:
            try:
                with self._lock:
                    lease.thread = None
                    _clear_async_exc(ident, None)
                return
            except JobInterrupted:  # raised before the lock was taken: detach again (none can follow)
                continue


def _resolve(future: asyncio.Future[ThreadResult], result: ThreadResult) -> None:
    if not future.done():
        future.set_result(result)
