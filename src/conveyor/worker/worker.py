"""Worker: leases batches of jobs, runs them with bounded concurrency, records outcomes in batches.

One pump coroutine does all hot-path Redis traffic: each call records the finished jobs and leases
new ones in the same round trip (finish-9.lua). Idle workers block on the queue's wake list instead
of polling; a heartbeat extends leases (and notices cancellation requests), and a sweep returns
jobs of dead workers to the queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor import codec
from conveyor.backoff import BackoffPolicies
from conveyor.errors import ConfigurationError, ConnectionFailedError
from conveyor.middleware import Middleware, MiddlewareChain
from conveyor.queue import Queue
from conveyor.redis.codes import ScriptCode
from conveyor.redis.connection import eviction_policy_warning, listpack_hint
from conveyor.redis.scripts import Outcome
from conveyor.worker.context import JobContext
from conveyor.worker.outcome import JobOutcome, OutcomeKind
from conveyor.worker.runner import Handler, Runner

logger = logging.getLogger(__name__)

_NOTE_CHARS = 200
MAX_IN_FLIGHT = 2
_EMPTY_OPTS: dict[str, Any] = {}


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(slots=True)
class WorkerStats:
    """Counters since start (per process, per queue)."""

    started_at: float = field(default_factory=time.time)
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    returned: int = 0
    lost: int = 0
    peak_active: int = 0
    last_heartbeat: float | None = None


class Worker:
    """Runs the jobs of one queue. `handlers` maps job names to `fn(ctx, data)` (async or sync)."""

    def __init__(
        self,
        queue: Queue,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = 10,
        lease_ms: int = 30_000,
        heartbeat_ms: int | None = None,
        stalled_interval_ms: int | None = None,
        max_stalls: int = 1,
        shutdown_grace_s: float = 30.0,
        idle_block_s: float = 5.0,
        worker_id: str | None = None,
        middleware: Sequence[Middleware] = (),
        max_result_bytes: int | None = None,
        batch_size: int | None = None,
        backoffs: BackoffPolicies | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError("concurrency must be >= 1")
        if lease_ms < 100:
            raise ConfigurationError("lease_ms must be >= 100")
        self.queue = queue
        self.concurrency = concurrency
        self.lease_ms = lease_ms
        self.heartbeat_s = (heartbeat_ms if heartbeat_ms is not None else min(lease_ms // 3, 1000)) / 1000
        self.stalled_interval_s = (
            stalled_interval_ms if stalled_interval_ms is not None else min(lease_ms // 2, 5000)
        ) / 1000
        self.max_stalls = max_stalls
        self.shutdown_grace_s = shutdown_grace_s
        self.idle_block_s = idle_block_s
        # Two round trips run at once, each asking for up to half the slots.
        self.batch_size = min(batch_size or max(1, (concurrency + 1) // 2), 1000)
        self.worker_id = worker_id or default_worker_id()
        self.middleware = MiddlewareChain(middleware)
        self.stats = WorkerStats()
        self.runner = Runner(
            handlers, threads=concurrency, max_result_bytes=max_result_bytes or queue.max_payload_bytes,
            backoffs=backoffs,
        )
        self._scripts = queue.scripts
        # Keyed by lease token: a job whose lease lapsed may be re-claimed while its old run lingers.
        self._running: dict[str, tuple[JobContext, asyncio.Task[None]]] = {}
        self._outcomes: list[Outcome] = []
        self._kick = asyncio.Event()
        self._idle = asyncio.Event()
        self._closed = asyncio.Event()
        self._has_work = True
        self._next_due: float | None = None
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._pump_task: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._reserved = 0
        self._failures = 0
        self._backing_off = False
        self._work_confirmed = False
        self._trip_error: BaseException | None = None
        self._started = False
        self._stopped = asyncio.Event()
        self.pump_failures = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def active(self) -> int:
        return len(self._running)

    @property
    def running(self) -> bool:
        return self._started and not self._stopped.is_set()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._pump_task = asyncio.create_task(self._pump(), name=f"conveyor-pump-{self.queue.name}")
        self._tasks = [
            asyncio.create_task(self._waker(), name=f"conveyor-waker-{self.queue.name}"),
            asyncio.create_task(self._heartbeat(), name=f"conveyor-heartbeat-{self.queue.name}"),
            asyncio.create_task(self._sweeper(), name=f"conveyor-sweep-{self.queue.name}"),
        ]
        await self.queue._register()
        warning = await eviction_policy_warning(self.queue.client)
        if warning:
            logger.warning("queue %s: %s", self.queue.name, warning)
        hint = await listpack_hint(self.queue.client)
        if hint:
            logger.info("queue %s: %s", self.queue.name, hint)

    async def run(self) -> None:
        """Start and keep running until `close()` is called (from a signal handler, say)."""
        await self.start()
        await self._stopped.wait()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def close(self, grace_s: float | None = None) -> None:
        """Stop claiming, let active jobs finish for up to `grace_s`, hand the rest back to waiting."""
        if not self._started or self._stopped.is_set():
            return
        grace = self.shutdown_grace_s if grace_s is None else grace_s
        self._closing = True
        self._closed.set()
        self._kick.set()
        waker = self._tasks[0]
        waker.cancel()
        tasks = [task for _, task in self._running.values()]
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        if self._running:
            self.runner.handing_back = True
            for ctx, task in list(self._running.values()):
                logger.info("handing job %s back to the queue at shutdown", ctx.job_id)
                task.cancel()
            await asyncio.wait([t for _, t in self._running.values()], timeout=5)
        self._kick.set()
        if self._pump_task is not None:
            try:
                await asyncio.wait_for(self._pump_task, timeout=10)
            except Exception:  # timeout, Redis down, or a pump that had died: still stop the other loops
                logger.warning("could not record the final outcomes of queue %s; leases will expire", self.queue.name)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.runner.close()
        self._stopped.set()

    # ------------------------------------------------------------------ hot path

    async def _pump(self) -> None:
        """Sends finish-and-claim round trips, at most MAX_IN_FLIGHT at once, so the worker runs one
        batch of jobs while Redis records the previous one. Slots asked for by a trip in flight are
        reserved, so the concurrency limit holds."""
        while True:
            if self._trip_error is not None:
                error, self._trip_error = self._trip_error, None
                raise error
            outcomes = self._outcomes
            free = 0 if self._closing else self.concurrency - len(self._running) - self._reserved
            want = min(free, self.batch_size)
            can_send = self._in_flight < MAX_IN_FLIGHT and not self._backing_off
            # A claim-only trip runs alongside another only when the last claim came back full;
            # otherwise one probe at a time (an idle queue costs one claim per wake-up).
            may_claim = want > 0 and self._has_work and (not self._in_flight or self._work_confirmed)
            if not can_send or (not outcomes and not may_claim):
                if self._closing and not self._running and not outcomes and not self._in_flight:
                    return
                self._kick.clear()
                if self._outcomes and can_send:
                    continue
                timeout = None
                if self._next_due is not None and not self._in_flight:
                    timeout = max(0.0, self._next_due - time.monotonic())
                try:
                    async with asyncio.timeout(timeout):
                        await self._kick.wait()
                except TimeoutError:
                    self._next_due = None
                    self._has_work = True
                continue
            self._outcomes = []
            want = max(want, 0)
            self._reserved += want
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._trip(outcomes, want))

    async def _trip(self, outcomes: list[Outcome], want: int) -> None:
        """One round trip: record `outcomes`, lease up to `want` jobs. On failure the outcomes go back
        into the buffer (nothing is lost) and the pump backs off or, for unexpected errors, crashes
        (its supervisor restarts it)."""
        claimed: list[Any] | None = None
        try:
            if outcomes:
                reply = await self._scripts.finish(self.worker_id, self.lease_ms, want, outcomes)
                self._check_codes(outcomes, reply)
                claimed = reply[len(outcomes):]
            else:
                claimed = await self._scripts.claim(self.worker_id, self.lease_ms, want)
            self._failures = 0
        except ConnectionFailedError as exc:
            self._outcomes = outcomes + self._outcomes
            self._failures += 1
            self.pump_failures += 1
            delay = min(5.0, 0.05 * 2 ** min(self._failures, 7))
            logger.warning("queue %s: Redis call failed (%s); retrying in %.2fs", self.queue.name, exc, delay)
            if self._closing and self._failures > 3:
                self._trip_error = exc
            else:
                self._backing_off = True
                await asyncio.sleep(delay)
                self._backing_off = False
        except BaseException as exc:
            self._outcomes = outcomes + self._outcomes
            self._trip_error = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._reserved -= want
            self._in_flight -= 1
            self._kick.set()
        if claimed is not None:
            self._start_jobs(claimed, want)

    def _check_codes(self, outcomes: list[Outcome], reply: list[Any]) -> None:
        for outcome, code in zip(outcomes, reply, strict=False):
            if code != ScriptCode.OK:
                self.stats.lost += 1
                logger.warning(
                    "queue %s: late write for job %s rejected (%s): its lease had expired and it was "
                    "recovered by another worker",
                    self.queue.name, outcome.job_id, ScriptCode(int(code)).name,
                )

    def _start_jobs(self, reply: list[Any], want: int) -> None:
        n = (len(reply) - 1) // 6
        self._work_confirmed = n == want > 0
        if n < want:
            self._has_work = False
            due_in = int(reply[0])
            self._next_due = None if due_in < 0 else time.monotonic() + due_in / 1000
            self._idle.set()
        else:
            self._has_work = True
        if n == 0:
            return
        scripts, queue, worker_id = self._scripts, self.queue.name, self.worker_id
        running, run = self._running, self._run
        create_task = asyncio.get_running_loop().create_task
        for i in range(1, n * 6, 6):
            job_id, token, attempt, name, data, opts = reply[i:i + 6]
            options = codec.loads(opts) if opts else _EMPTY_OPTS
            ctx = JobContext(scripts, queue, worker_id, job_id, token, int(attempt), name, None, options)
            running[token] = (ctx, create_task(run(ctx, data)))
        if len(running) > self.stats.peak_active:
            self.stats.peak_active = len(running)

    async def _run(self, ctx: JobContext, data: str) -> None:
        if self.middleware:
            await self.middleware.call("before_job", ctx)
        outcome = await self.runner.run(ctx, data)
        if self.middleware:
            await self.middleware.call("after_job", ctx, outcome)
        self._record(ctx, outcome)

    def _record(self, ctx: JobContext, outcome: JobOutcome) -> None:
        del self._running[ctx.token]
        stats = self.stats
        kind = outcome.kind
        options = ctx.options
        if kind is OutcomeKind.COMPLETED:
            stats.processed += 1
            stats.succeeded += 1
            ttl = options.get("result_ttl")
            keep_ms = -1 if ttl is None else int(ttl * 1000)
            self._outcomes.append(Outcome(ctx.job_id, ctx.token, "C", outcome.result, keep_ms, "", ctx.cost_used))
        elif kind is OutcomeKind.LOST:
            stats.lost += 1
            logger.warning("queue %s: job %s lost its lease; its outcome is dropped", ctx.queue, ctx.job_id)
        else:
            error = outcome.error or {}
            note = f"{error.get('type', '')}: {error.get('message', '')}"[:_NOTE_CHARS] if error else outcome.reason
            payload = codec.dumps(error).decode() if kind is not OutcomeKind.BACK else outcome.reason
            if kind is OutcomeKind.FAILED:
                stats.processed += 1
                stats.failed += 1
                ttl = options.get("failed_ttl")
                number = -1 if ttl is None else int(ttl * 1000)
            elif kind is OutcomeKind.RETRY:
                stats.processed += 1
                stats.retried += 1
                number = int(outcome.delay_s * 1000)
            elif kind is OutcomeKind.CANCELLED:
                stats.processed += 1
                stats.cancelled += 1
                number = 0
            else:
                stats.returned += 1
                number = int(outcome.delay_s * 1000)
            code = "T" if outcome.throttle else kind.value  # T: back + block claiming (finish-9.lua)
            self._outcomes.append(Outcome(ctx.job_id, ctx.token, code, payload, number, note, ctx.cost_used))
        self._kick.set()

    # ------------------------------------------------------------------ background loops

    async def _waker(self) -> None:
        """Blocks on the wake list while the worker has free slots and saw no work."""
        client, key = self.queue.client, self.queue.keys.wake
        failures = 0
        while not self._closing:
            await self._idle.wait()
            try:
                await client.blpop([key], timeout=self.idle_block_s)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(5.0, 0.05 * 2 ** min(failures, 7))
                logger.warning("queue %s: wake-up wait failed (%s); retrying in %.2fs", self.queue.name, exc, delay)
                await asyncio.sleep(delay)
            self._idle.clear()
            self._has_work = True
            self._kick.set()

    async def _sleep_or_closed(self, seconds: float) -> bool:
        """Sleep; True if the worker started closing meanwhile."""
        try:
            await asyncio.wait_for(self._closed.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _heartbeat(self) -> None:
        while True:
            if await self._sleep_or_closed(self.heartbeat_s) and not self._running:
                return
            self.stats.last_heartbeat = time.time()
            if not self._running:
                continue
            leases = [(ctx.job_id, token) for token, (ctx, _) in self._running.items()]
            try:
                statuses = await self._scripts.extend(self.lease_ms, leases)
            except ConnectionFailedError as exc:
                logger.warning("queue %s: heartbeat failed (%s)", self.queue.name, exc)
                continue
            for (job_id, token), status in zip(leases, statuses, strict=True):
                entry = self._running.get(token)
                if entry is None:
                    continue
                ctx, task = entry
                if status == 1 and not ctx.cancel_requested:
                    ctx.cancel_requested = True
                    logger.info("queue %s: cancelling job %s on request", ctx.queue, job_id)
                    if self.runner.handlers.get(ctx.name, None) is None or self.runner.handlers[ctx.name].is_async:
                        task.cancel()
                elif status < 0 and not ctx.lease_lost:
                    ctx.lease_lost = True
                    logger.warning("queue %s: lease of job %s was lost; cancelling its handler", ctx.queue, job_id)
                    task.cancel()

    async def _sweeper(self) -> None:
        while not await self._sleep_or_closed(self.stalled_interval_s):
            try:
                recovered, dead = await self._scripts.recover_stalled(self.max_stalls)
            except ConnectionFailedError as exc:
                logger.warning("queue %s: stalled-job sweep failed (%s)", self.queue.name, exc)
                continue
            if recovered or dead:
                logger.warning(
                    "queue %s: recovered %d stalled job(s), failed %d that stalled too often",
                    self.queue.name, recovered, dead,
                )

    # ------------------------------------------------------------------ supervision

    @property
    def loop_tasks(self) -> dict[str, asyncio.Task[None]]:
        """The background loops by name (pump, waker, heartbeat, sweep), for a supervisor to watch."""
        tasks = dict(zip(("waker", "heartbeat", "sweep"), self._tasks, strict=False))
        if self._pump_task is not None:
            tasks["pump"] = self._pump_task
        return tasks

    def restart_loop(self, name: str) -> None:
        """Start a fresh copy of a loop that ended with an error; jobs in flight are unaffected."""
        if self._closing or not self._started:
            return
        factories = {
            "pump": self._pump, "waker": self._waker, "heartbeat": self._heartbeat, "sweep": self._sweeper,
        }
        task = asyncio.create_task(factories[name](), name=f"conveyor-{name}-{self.queue.name}")
        if name == "pump":
            self._pump_task = task
        else:
            self._tasks[("waker", "heartbeat", "sweep").index(name)] = task
        self._kick.set()
