"""A bounded set of threads for document parsing.

A parser cannot be stopped once it runs: when its job times out or is cancelled, the thread goes on
until the parse ends (its work is bounded by the document limits, not by the job). Through the event
loop's shared executor, a flood of such jobs queued parse after parse behind the lingering ones,
each holding its document in memory, and starved everything else that runs there (DNS lookups
included). Here at most `size` parses run at once, counting those whose job has gone; a new parse
waits up to `wait_s` for one of them to end, then the job is put back without using an attempt
(`RateLimited`). A parse that outlives its job is logged as a warning with the count of such threads,
and is told to stop (`stop`): a PDF's text is read page by page, so its parse ends at the next page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from conveyor.errors import ConfigurationError, RateLimited

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_PARSERS = 4
MAX_PARSERS = 64
DEFAULT_WAIT_S = 30.0
RETRY_AFTER_S = 5.0
THREAD_NAME = "conveyor-parse"


class ParseAbandoned(Exception):
    """Raised in a parser thread that stopped early because its job no longer waits."""


class ParserPool:
    """At most `size` parser threads at once, including those still running for jobs that ended."""

    def __init__(self, size: int = DEFAULT_PARSERS, *, wait_s: float = DEFAULT_WAIT_S) -> None:
        if not 1 <= size <= MAX_PARSERS:
            raise ConfigurationError(f"CONVEYOR_DOCUMENTS_PARSERS must be in [1, {MAX_PARSERS}], got {size}")
        self.size = size
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._running = 0
        self._abandoned = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._serial = 0

    @property
    def running(self) -> int:
        """Parser threads running now."""
        return self._running

    @property
    def abandoned(self) -> int:
        """Parser threads running for a job that no longer waits for them (timed out, cancelled)."""
        return self._abandoned

    async def run(self, fn: Callable[..., T], *args: object, stop: threading.Event | None = None) -> T:
        """`fn(*args)` in a parser thread once one is free; RateLimited when none frees in `wait_s`.
        `stop` is set when the job stops waiting, for a parser that can end early (between pages)."""
        await self._acquire()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        gone = threading.Event()  # set when the job stops waiting for this parse
        self._serial += 1
        thread = threading.Thread(
            target=self._work, args=(loop, done, gone, fn, args), name=f"{THREAD_NAME}-{self._serial}", daemon=True
        )
        try:
            thread.start()
        except BaseException:
            self._release(abandoned=False)
            raise
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            done.add_done_callback(_retrieve)  # its outcome has nobody to go to
            if stop is not None:
                stop.set()
            self._abandon(gone)
            raise

    def _work(
        self,
        loop: asyncio.AbstractEventLoop,
        done: asyncio.Future[T],
        gone: threading.Event,
        fn: Callable[..., T],
        args: tuple[object, ...],
    ) -> None:
        try:
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the waiting job, which raises it
                _deliver(loop, done, None, exc)
            else:
                _deliver(loop, done, result, None)
        finally:
            with self._lock:
                abandoned = gone.is_set()
                gone.set()  # a job cancelled from now on finds the parse over
            self._release(abandoned=abandoned)

    def _abandon(self, gone: threading.Event) -> None:
        with self._lock:
            if gone.is_set():  # the parse has just ended
                return
            gone.set()
            self._abandoned += 1
            count = self._abandoned
        logger.warning(
            "a document parse outlived its job; %d of %d parser threads are still busy with documents of jobs "
            "that ended (new parses wait for them)", count, self.size,
        )

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while True:
            with self._lock:
                if self._running < self.size:
                    self._running += 1
                    return
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, waiter))
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                raise self._busy() from None
            finally:
                with self._lock, contextlib.suppress(ValueError):
                    self._waiters.remove((loop, waiter))

    def _busy(self) -> RateLimited:
        abandoned = self._abandoned
        logger.warning(
            "all %d document parser threads are busy (%d with documents of jobs that ended); a job is put back",
            self.size, abandoned,
        )
        return RateLimited(
            retry_after=RETRY_AFTER_S,
            reason=f"all {self.size} document parsers are busy ({abandoned} with documents of jobs that ended)",
        )

    def _release(self, *, abandoned: bool) -> None:
        with self._lock:
            self._running -= 1
            if abandoned:
                self._abandoned -= 1
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:  # each re-checks for a free thread
            _deliver(loop, waiter, None, None)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _deliver(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[T], result: T | None, exc: BaseException | None
) -> None:
    """Complete `future` on its loop from any thread (nothing to do once it is done or its loop closed)."""

    def complete() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(complete)
