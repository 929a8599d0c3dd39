"""Worker: leases batches of jobs, runs them with bounded concurrency, records outcomes in batches.

The worker is a composition of single-purpose parts around one table of leases (lease.py):
the pump (pump.py) sends every hot-path round trip as an idempotent trip that records outcomes and
leases more jobs; the keeper (keeper.py) alone renews leases; the runner (runner.py) runs handlers,
sync ones in interruptible threads (threads.py); a waker blocks on the queue's wake list while the
worker is idle, and a sweep returns the jobs of dead workers to the queue. Every loop backs off on a
Redis fault and resumes by itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster

from conveyor import codec
from conveyor.backoff import BackoffPolicies
from conveyor.cancelling import cancel_and_wait
from conveyor.costs.ledger import CostLedger
from conveyor.errors import ConfigurationError, ConnectionFailedError
from conveyor.flows.mover import OutboxMover
from conveyor.limits.gate import LimiterGate, RunRefusal
from conveyor.limits.named import Limiter, LimiterUse, merge_uses
from conveyor.middleware import Middleware, MiddlewareChain
from conveyor.queue import Queue
from conveyor.redis.codes import ScriptCode
from conveyor.redis.connection import eviction_policy_warning, listpack_hint
from conveyor.redis.faults import guarded
from conveyor.redis.scripts import CLAIM_FIELDS, CLAIM_HEADER
from conveyor.worker.context import JobContext
from conveyor.worker.keeper import LeaseKeeper
from conveyor.worker.lease import Lease, Stop
from conveyor.worker.outcome import JobOutcome, OutcomeKind
from conveyor.worker.pump import TripPump, describe_code
from conveyor.worker.runner import Handler, Runner
from conveyor.worker.settings import MAX_BATCH, check_settings, heartbeat_warning, seconds_ms, unreadable_options
from conveyor.worker.slots import SlotPool
from conveyor.worker.sweeper import StallSweeper
from conveyor.worker.threads import SyncThreads
from conveyor.worker.wakehub import HUB_BLOCK_S, INTERRUPT_TTL_MS, Pacer, WakeHub

logger = logging.getLogger(__name__)

DEFAULT_MAX_STALLS = 1
DEFAULT_MAX_LAPSES = 10
DEFAULT_NO_HANDLER_TIMEOUT_S = 900.0
STOP_WAIT_S = 5.0  # at shutdown, how long stopped runs may take to end before they are released anyway
FLUSH_TIMEOUT_S = 10.0  # at shutdown, how long the last outcomes may take to reach Redis
RESTART_FIRST_S = 0.5  # a loop that ended while the worker runs starts again after this, doubling
RESTART_MAX_S = 30.0
RESTART_CALM_S = 60.0  # a loop that ran this long since its last restart starts its backoff afresh
_NOTE_CHARS = 200
_EMPTY_OPTS: dict[str, Any] = {}
_LOOPS = ("waker", "heartbeat", "sweep", "mover")


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
    held: int = 0  # jobs handed on because this worker has no handler for their name
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
        max_stalls: int = DEFAULT_MAX_STALLS,
        max_lapses: int = DEFAULT_MAX_LAPSES,
        no_handler_timeout_s: float = DEFAULT_NO_HANDLER_TIMEOUT_S,
        shutdown_grace_s: float = 30.0,
        idle_block_s: float = 5.0,
        worker_id: str | None = None,
        middleware: Sequence[Middleware] = (),
        max_result_bytes: int | None = None,
        batch_size: int | None = None,
        backoffs: BackoffPolicies | None = None,
        limiters: Sequence[LimiterUse] = (),
        declare_limiters: Sequence[Limiter] = (),
        costs: bool | None = None,
        wake_hub: WakeHub | None = None,
        pacer: Pacer | None = None,
        slots: SlotPool | None = None,
        stats: WorkerStats | None = None,
        park_idle: bool | None = None,
    ) -> None:
        """`limiters`: the named limiters this queue's jobs go through (docs/limits.md): each claim is
        admitted by all of them, and each job holds them until it ends. `declare_limiters`: limiters
        this worker writes to Redis at start (idempotent); the others must have been declared.
        `costs`: record the usage runs report per tenant, task and day and enforce tenants' budgets
        (conveyor.costs; default: on when the queue uses named limiters).
        `wake_hub` and `pacer`: shared by the workers of one process serving many queues (one
        blocking wait for all of them, a bounded rate of idle housekeeping; docs/scaling.md); by
        default the worker has its own. `slots` and `stats`: shared by the workers of the
        partitions of one queue (conveyor.partitions). `park_idle`: an idle worker sends its next
        claim ahead, for Redis to run once a job arrives (one blocking connection per queue; default:
        on for a worker with its own wake hub); never with named limiters, shared slots or a Cluster."""
        check_settings(concurrency, lease_ms, max_stalls, max_lapses, no_handler_timeout_s, heartbeat_ms,
                        stalled_interval_ms, idle_block_s)
        if queue.partitioned:
            raise ConfigurationError(
                f"queue {queue.name!r} is partitioned: run it with conveyor.partitions.worker_for (or app.worker)")
        self.queue = queue
        self.concurrency = concurrency
        self.lease_ms = lease_ms
        self.heartbeat_s = (heartbeat_ms if heartbeat_ms is not None else min(lease_ms // 3, 1000)) / 1000
        self.stalled_interval_s = (
            stalled_interval_ms if stalled_interval_ms is not None else min(lease_ms // 2, 5000)
        ) / 1000
        self.max_stalls = max_stalls
        self.max_lapses = max_lapses
        self.no_handler_timeout_s = no_handler_timeout_s
        self.shutdown_grace_s = shutdown_grace_s
        self.idle_block_s = idle_block_s
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            # (below 1 no trip would ever ask for a job: the worker would sit idle beside a full queue)
            raise ConfigurationError(f"batch_size must be an integer >= 1 (None for the default), got {batch_size!r}")
        # Two trips run at once, each asking for up to half the slots.
        self.batch_size = min(batch_size or max(1, (concurrency + 1) // 2), MAX_BATCH)
        self.worker_id = worker_id or default_worker_id()
        self.middleware = MiddlewareChain(middleware)
        self.stats = stats or WorkerStats()
        self.slots = slots
        self.threads = SyncThreads(concurrency)
        self.runner = Runner(
            handlers, threads=self.threads, max_result_bytes=max_result_bytes or queue.max_payload_bytes,
            backoffs=backoffs,
        )
        self._scripts = queue.scripts
        # The lease table, keyed by token: a job whose lease lapsed may be leased again while its
        # old run lingers, so the id alone would not do.
        self.pacer = pacer or Pacer()
        self.leases: dict[str, Lease] = {}
        self._running = 0  # leases whose run has not ended (each holds a slot)
        self._all_ended = asyncio.Event()
        self._all_ended.set()
        uses = merge_uses(list(limiters))
        ledger = CostLedger(queue.client, queue.prefix) if (bool(uses) if costs is None else costs) else None
        self.gate = (LimiterGate(queue.client, queue.prefix, uses, lease_ms, declare_limiters, ledger)
                     if uses or ledger else None)
        self.pump = TripPump(
            self._scripts, queue.name, self.worker_id, lease_ms=lease_ms, batch_size=self.batch_size,
            free_slots=self._free_slots, handler_names=sorted(self.runner.handlers),
            leases=self.leases, start_jobs=self._start_jobs, refused=self._refused, gate=self.gate,
            released=None if slots is None else slots.released,
        )
        if slots is not None:
            slots.pumps.append(self.pump)
        # Flows: delivers this queue's child outcomes to their parents (flows/mover.py).
        self.mover = OutboxMover(queue.client, queue.keys, queue.events_maxlen,
                                 None if self.pacer.limited else self.stalled_interval_s)
        self.pump.on_recorded = self._recorded
        self.keeper = LeaseKeeper(self._scripts, queue.name, self.leases, lease_ms, self.heartbeat_s, self._beat,
                                  gate=self.gate, idle_wait=self.pacer.limited)
        self.sweeper = StallSweeper(self)
        self._own_hub = wake_hub is None
        self.wake_hub = wake_hub or WakeHub(queue.client)
        # Parked claims pipeline a BLPOP and the trip on one connection: not on a Cluster (its
        # pipelines do not keep one connection's order), not where a claim needs the limiters'
        # admission first, and not with slots shared between partitions.
        self.parks = ((self._own_hub if park_idle is None else park_idle) and self.gate is None
                      and slots is None and not isinstance(queue.client, RedisCluster))
        self._park_interrupt = queue.keys.hub(self.wake_hub.id + ".park." + self.worker_id)
        self._closing = False
        self._started = False
        self._stopped = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Restarts its own loops unless a supervisor (the worker service's QueueWatch) does.
        self.self_healing = True
        self.loop_restarts = 0
        self._restart_streak: dict[str, tuple[int, float]] = {}
        self._outside_end_noted = False  # one warning per burst of loops stopped from outside (see _loop_ended)
        self._releasing: set[asyncio.Task[None]] = set()  # limiter holds of lost leases being given back

    # ------------------------------------------------------------------ lifecycle

    @property
    def active(self) -> int:
        """Jobs whose run has not ended (a sync handler counts until its thread returns)."""
        return self._running

    @property
    def trips(self) -> int:
        """Trips sent so far (each claims and/or records outcomes): a sign of activity."""
        return self.pump.trips

    def _free_slots(self) -> int:
        if self.slots is not None:
            return self.slots.free_for(self.pump)
        return self.concurrency - self._running

    @property
    def running(self) -> bool:
        return self._started and not self._stopped.is_set()

    @property
    def pump_failures(self) -> int:
        """Trips that met a Redis fault (each was sent again)."""
        return self.pump.faults

    async def start(self) -> None:
        if self._started:
            return
        if self.gate is not None:
            try:
                await self.gate.check()  # an undeclared limiter fails here, not at the first claim
            except ConnectionFailedError as exc:
                logger.warning("queue %s: limiters not checked (%s)", self.queue.name, exc)
        self._started = True
        for name in ("pump", *_LOOPS):
            self._spawn(name)
        try:
            await self.queue._register()
        except ConnectionFailedError as exc:  # the loops retry on their own; registration waits for the next add
            logger.warning("queue %s: Redis not usable at start (%s); the worker keeps trying", self.queue.name, exc)
        beat = heartbeat_warning(self.heartbeat_s, self.lease_ms)
        if beat:
            logger.warning("queue %s: %s", self.queue.name, beat)
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
        """Stop leasing, let running jobs finish for up to `grace_s`, then stop them and hand them
        back to the queue explicitly; record every outcome. Bounded: never waits for ever."""
        if not self._started or self._stopped.is_set():
            return
        if self._closing:
            await self._stopped.wait()
            return
        grace = self.shutdown_grace_s if grace_s is None else grace_s
        self._closing = True
        self.pump.closing = True
        self.pump.kick.set()
        self._tasks["waker"].cancel()
        if self.pump.parked is not None:
            await self._end_park()
        if self._running and grace > 0:
            await self._wait_ended(grace)
        if self._running:
            running = [lease for lease in self.leases.values() if lease.running]
            for lease in running:
                logger.info("queue %s: handing job %s back to the queue at shutdown", self.queue.name, lease.job_id)
                lease.request_stop(Stop.SHUTDOWN)
            await self._wait_ended(STOP_WAIT_S)
            for lease in running:
                if lease.running:  # a handler that ignores cancellation, a thread stuck in a C call
                    logger.warning("queue %s: job %s did not stop within %.0f s; handed back anyway (its run "
                                   "may still be going)", self.queue.name, lease.job_id, STOP_WAIT_S)
                    self._end(lease, JobOutcome(OutcomeKind.BACK, reason=Stop.SHUTDOWN.value))
        await self._flush()
        loops = [task for name, task in self._tasks.items() if name != "pump"]
        await cancel_and_wait(loops, timeout=5)
        self.threads.close()
        if self._own_hub:
            await self.wake_hub.close()
        self._stopped.set()

    async def _end_park(self) -> None:
        """End a parked claim's wait now, so closing does not wait for it (what it leases is handed
        back at once, see _start_jobs). On a fault its wait ends by itself within idle_block_s."""
        try:
            async with self.queue.client.pipeline(transaction=False) as pipe:
                pipe.lpush(self._park_interrupt, "1")
                pipe.pexpire(self._park_interrupt, INTERRUPT_TTL_MS)
                await guarded(pipe.execute(), "ending a parked claim")
        except ConnectionFailedError as exc:
            logger.debug("queue %s: could not end the parked claim (%s)", self.queue.name, exc)

    async def _wait_ended(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._all_ended.wait()
        except TimeoutError:
            pass

    async def _flush(self) -> None:
        """Let the pump record the last outcomes; give up after FLUSH_TIMEOUT_S (Redis unreachable)."""
        if self._tasks["pump"].done():  # it crashed and nobody restarted it: it must flush
            self._spawn("pump")
        pump = self._tasks["pump"]
        done, _ = await asyncio.wait((pump,), timeout=FLUSH_TIMEOUT_S)
        if not done:
            pump.cancel()
        elif not pump.cancelled() and pump.exception() is None:
            return
        stranded = self.pump.cancel_in_flight()
        if stranded:
            logger.warning(
                "queue %s: could not record %d outcome(s) at shutdown; their leases will lapse and the "
                "stalled sweep returns those jobs to the queue", self.queue.name, len(stranded))

    # ------------------------------------------------------------------ the lease table

    def _start_jobs(self, claimed: list[Any]) -> None:
        """Take ownership of leases a trip brought back and start their runs."""
        scripts, queue, worker_id = self._scripts, self.queue.name, self.worker_id
        leases, handlers, run = self.leases, self.runner.handlers, self._run
        create_task = asyncio.get_running_loop().create_task
        for i in range(CLAIM_HEADER, len(claimed), CLAIM_FIELDS):
            job_id, token, attempt, name, data, opts = claimed[i:i + CLAIM_FIELDS]
            try:
                options = codec.loads(opts) if opts else _EMPTY_OPTS
            except ValueError:
                options = None
            lease = Lease(job_id, token, int(attempt), name, options if isinstance(options, dict) else _EMPTY_OPTS)
            leases[token] = lease
            self._running += 1
            if self.slots is not None:
                self.slots.running += 1
            if self._closing:  # leased by a trip sent before close(): back to the queue at once
                self._end(lease, JobOutcome(OutcomeKind.BACK, reason=Stop.SHUTDOWN.value))
            elif (problem := unreadable_options(options)) is not None:
                error = {"type": "InvalidJob", "message": problem, "attempt": lease.attempt}
                self._end(lease, JobOutcome(OutcomeKind.FAILED, error=error))
            elif name not in handlers:
                self._end(lease, JobOutcome(OutcomeKind.HELD, reason=f"no handler for {name!r} on this worker"))
            else:
                ctx = JobContext(scripts, queue, worker_id, job_id, token, lease.attempt, name, None, lease.options,
                                 lease)
                lease.ctx = ctx
                lease.task = create_task(run(lease, ctx, data))
        if self._running:
            self._all_ended.clear()
            self.keeper.work.set()
        running = self._running if self.slots is None else self.slots.running
        if running > self.stats.peak_active:
            self.stats.peak_active = running

    async def _run(self, lease: Lease, ctx: JobContext, data: str) -> None:
        outcome: JobOutcome | None = None
        try:
            if self.gate is not None and self.gate.ledger is not None:
                refusal = await self.gate.admit_run(lease)
                if refusal is not None:
                    outcome = _refused_outcome(refusal, lease.attempt)
                    return
            if self.middleware:
                await self.middleware.call("before_job", ctx)
            outcome = await self.runner.run(lease, ctx, data)
            if self.middleware:
                await self.middleware.call("after_job", ctx, outcome)
        except asyncio.CancelledError:
            if outcome is None:
                outcome = self.runner.stopped(lease, ctx)
        except BaseException as exc:  # a SystemExit from middleware fails the job too
            if outcome is None:  # a middleware's before_job failed: a failed attempt
                outcome = self.runner.failed(ctx, exc)
            else:
                logger.exception("queue %s: after_job middleware failed for job %s", self.queue.name, lease.job_id)
        finally:
            self._end(lease, outcome or JobOutcome(OutcomeKind.BACK, reason=Stop.SHUTDOWN.value))

    def _end(self, lease: Lease, outcome: JobOutcome) -> None:
        """The run of `lease` ended: free its slot and queue its outcome for the next trip."""
        if lease.outcome is not None:
            return  # released earlier (shutdown)
        self._running -= 1
        if self._running == 0:
            self._all_ended.set()
        if self.slots is not None:
            self.slots.running -= 1
            self.slots.released()
        stats = self.stats
        kind = outcome.kind
        if kind is OutcomeKind.LOST:
            stats.lost += 1
            lease.end("L", "", 0, "")
            self.leases.pop(lease.token, None)
            if self.gate is not None:  # its usage is still recorded, its reservation and holds given back
                self.gate.drop(lease)
            logger.warning("queue %s: job %s lost its lease; its outcome is dropped", self.queue.name, lease.job_id)
            if self.gate is not None:
                self._release_holds(lease)
            self.pump.kick.set()
            return
        options = lease.options
        if kind is OutcomeKind.COMPLETED:
            stats.processed += 1
            stats.succeeded += 1
            lease.end("C", outcome.result, seconds_ms(options.get("result_ttl"), -1), "")
        elif kind is OutcomeKind.WAIT:
            lease.end("W", "", 0, outcome.reason)
        elif kind is OutcomeKind.HELD:
            stats.held += 1
            logger.warning("queue %s: job %s (%s): %s; it waits for a worker that has one",
                           self.queue.name, lease.job_id, lease.name, outcome.reason)
            lease.end("H", outcome.reason, 0, outcome.reason)
        else:
            error = outcome.error or {}
            note = f"{error.get('type', '')}: {error.get('message', '')}"[:_NOTE_CHARS] if error else outcome.reason
            payload = codec.dumps(error).decode() if kind is not OutcomeKind.BACK else outcome.reason
            if kind is OutcomeKind.FAILED:
                stats.processed += 1
                stats.failed += 1
                number = seconds_ms(options.get("failed_ttl"), -1)
            elif kind is OutcomeKind.RETRY:
                stats.processed += 1
                stats.retried += 1
                number = seconds_ms(outcome.delay_s, 0)
            elif kind is OutcomeKind.CANCELLED:
                stats.processed += 1
                stats.cancelled += 1
                number = 0
            else:
                stats.returned += 1
                number = seconds_ms(outcome.delay_s, 0)
            code = "T" if outcome.throttle else kind.value  # T: back + block claiming (finish-10.lua)
            lease.end(code, payload, number, note)
        self.pump.add_ended(lease)

    def _release_holds(self, lease: Lease) -> None:
        """A lost lease's run ended without a trip (nothing of it is written): give its named
        limiters' holds back now. The gate releases every other lease's holds in the trip that
        records its outcome; this one's would otherwise be extended by the heartbeat for as long
        as the worker lives."""
        async def release() -> None:
            assert self.gate is not None
            try:
                await self.gate.release([lease])
            except Exception:  # a hold not released expires within a lease (the gate stopped extending it)
                logger.exception("queue %s: releasing the limiter holds of job %s failed", self.queue.name,
                                 lease.job_id)

        task = asyncio.get_running_loop().create_task(release())
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    def _refused(self, lease: Lease, code: int) -> None:
        """Redis answered for this lease's outcome with an error code (the lease is over)."""
        lost = code == ScriptCode.LEASE_LOST
        self.stats.lost += lost
        level = logging.WARNING if lost else logging.INFO
        logger.log(level, "queue %s: outcome of job %s not recorded: %s", self.queue.name, lease.job_id,
                   describe_code(code))

    def _recorded(self, leases: list[Lease]) -> None:
        """Outcomes were recorded: hand flow children's ends over to their parents without delay."""
        for lease in leases:
            if "flow" in lease.options:
                self.mover.kick.set()
                return

    def _beat(self) -> None:
        self.stats.last_heartbeat = time.time()

    # ------------------------------------------------------------------ background loops

    async def _waker(self) -> None:
        """While the worker has free slots and saw no work, waits (through the wake hub) for a
        marker on the queue's wake list. A wait that ends without one probes the queue (a marker
        can be lost with a worker that died holding it) unless the pacer is shared: then the paced
        sweep probes idle queues, so 1,000 idle queues do not probe every `idle_block_s`."""
        keys = self.queue.keys
        interrupt = keys.hub(self.wake_hub.id)
        while True:
            await self.pump.idle.wait()
            # The park's BLPOP blocks no longer than the hub's would (below the client's read timeout).
            if self.parks and self.pump.park([self._park_interrupt, keys.wake], min(self.idle_block_s, HUB_BLOCK_S)):
                self.pump.idle.clear()  # set again when the parked claim finds nothing to lease
                continue
            # A shared pacer probes idle queues itself: the wait needs no timer of its own.
            timeout = None if self.pacer.limited else self.idle_block_s
            # A marker starts the claim from the hub itself (_woken), as it is handed over.
            if await self.wake_hub.wait(keys.wake, interrupt, timeout, self._woken) or self.pacer.limited:
                continue
            self._woken()  # the wait's own timer ended: the safety-net probe

    def _woken(self) -> None:
        """Claim now: a marker came, or the safety net probes the idle queue."""
        self.pump.idle.clear()
        self.pump.wake()

    async def _pump(self) -> None:
        await self.pump.run(busy=lambda: self._running > 0)

    # ------------------------------------------------------------------ supervision

    def _spawn(self, name: str) -> None:
        factories = {"pump": self._pump, "waker": self._waker, "heartbeat": self.keeper.run, "sweep": self.sweeper.run,
                     "mover": self.mover.run}
        task = asyncio.create_task(_contained(name, factories[name]()), name=f"conveyor-{name}-{self.queue.name}")
        task.add_done_callback(lambda ended: self._loop_ended(name, ended))
        self._tasks[name] = task

    def _loop_ended(self, name: str, task: asyncio.Task[None]) -> None:
        """A loop that ends while the worker runs (an error no fault handling foresaw) is logged and
        started again with backoff, so a Worker used without the service never goes quietly idle."""
        if self._closing or not self.self_healing or self._tasks.get(name) is not task:
            return
        error = None if task.cancelled() else task.exception()
        if task.cancelled():
            self._note_outside_end(name)
        elif error is None:
            error = LoopReturnedError(f"the {name} loop returned while the worker was open")
        # Calm is counted from the loop's last restart, not from its last end: a delay past
        # RESTART_CALM_S would otherwise send a loop that ends at once back to the first delay.
        count, restarted = self._restart_streak.get(name, (0, 0.0))
        if time.monotonic() - restarted > RESTART_CALM_S:
            count = 0
        delay = min(RESTART_MAX_S, RESTART_FIRST_S * 2 ** min(count, 30))  # 2**1024 does not fit a float
        self._restart_streak[name] = (count + 1, restarted)
        if error is not None:
            logger.error("queue %s: the %s loop ended (%s); starting it again in %.1f s", self.queue.name,
                         name, f"{type(error).__name__}: {error}", delay,
                         exc_info=None if isinstance(error, LoopReturnedError) else error)
        asyncio.get_running_loop().call_later(delay, self._restart_own, name, task)

    def _note_outside_end(self, name: str) -> None:
        """A loop cancelled while the worker is open: most often its event loop ending
        with the Worker never closed (asyncio.run cancels every task). One warning that says so
        stands for the whole burst; each loop is still started again, in case the cancel was stray."""
        if self._outside_end_noted:
            logger.debug("queue %s: the %s loop was stopped from outside the worker", self.queue.name, name)
            return
        self._outside_end_noted = True
        logger.warning("queue %s: the %s loop was stopped from outside the worker (an event loop ending "
                       "with the Worker still open? call `await worker.close()` before it ends); starting it "
                       "again", self.queue.name, name)

    def _restart_own(self, name: str, ended: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is ended and self.self_healing:
            self.loop_restarts += 1
            self._outside_end_noted = False
            count, _ = self._restart_streak.get(name, (0, 0.0))
            self._restart_streak[name] = (count, time.monotonic())
            self.restart_loop(name)

    @property
    def loop_tasks(self) -> dict[str, asyncio.Task[None]]:
        """The background loops by name (pump, waker, heartbeat, sweep), for a supervisor to watch."""
        return dict(self._tasks)

    def restart_loop(self, name: str) -> None:
        """Start a fresh copy of a loop that ended with an error; jobs in flight are unaffected. A
        loop still running is left alone (never two copies of one loop)."""
        if self._closing or not self._started or not self._tasks[name].done():
            return
        self._spawn(name)
        self.pump.kick.set()


class LoopReturnedError(Exception):
    """A background loop of the worker returned although the worker was not closing (a defect)."""


class LoopExitError(Exception):
    """A background loop of the worker raised SystemExit (code it calls, not a handler)."""


async def _contained(name: str, loop: Awaitable[None]) -> None:
    """Run a background loop; a SystemExit out of it ends the loop alone (it is restarted like any
    loop that ended on an error). asyncio lets a task's SystemExit end the whole event loop, so one
    raised by code a loop calls would otherwise end the process, every running job with it."""
    try:
        await loop
    except SystemExit as exc:
        raise LoopExitError(f"SystemExit({exc.code!r}) raised in the {name} loop") from exc


def _refused_outcome(refusal: RunRefusal, attempt: int) -> JobOutcome:
    """A run a tenant's budget did not admit (docs/llm.md, "Cost per tenant")."""
    if refusal.kind == "fail":
        error = {"type": "BudgetExceededError", "message": refusal.message, "attempt": attempt}
        return JobOutcome(OutcomeKind.FAILED, error=error)
    return JobOutcome(OutcomeKind.BACK, delay_s=refusal.delay_s, reason=refusal.message,
                      throttle=refusal.kind == "wait")
