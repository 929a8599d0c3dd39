"""WorkerService: one supervised Worker per queue in one process, plus registry, metrics and stats loops.

Usable from code (`await service.run()` / `request_stop()`, `pause()`/`resume()`); `conveyor worker`
wraps it with settings, logging and signal handling. It never configures logging itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import structlog

from conveyor import __version__
from conveyor.app import Conveyor
from conveyor.cancelling import cancel_and_wait
from conveyor.costs.ledger import CostLedger
from conveyor.errors import ConfigurationError, ConnectionFailedError, UnknownLimiterError
from conveyor.job import JobState
from conveyor.limits.shared import SharedLimiter
from conveyor.middleware import Middleware
from conveyor.partitions import QueueWorker, read_layouts, unserved_jobs
from conveyor.redis.connection import RedisClient, connect, drop_idle_connections
from conveyor.redis.faults import until_usable
from conveyor.schedules import Scheduler
from conveyor.service import stats as st
from conveyor.service.joblog import JobLogMiddleware
from conveyor.service.metrics import Metrics, MetricsMiddleware
from conveyor.service.plan import QueuePlan
from conveyor.service.registry import RegistryWriter
from conveyor.service.watch import QueueWatch
from conveyor.settings import Settings
from conveyor.worker import JobContext, JobOutcome
from conveyor.worker.wakehub import HUB_GROUPS, Pacer, WakeHub
from conveyor.worker.worker import default_worker_id

logger = logging.getLogger(__name__)
PING_TIMEOUT_S = 2.0
IDLE_SAMPLES_PER_ROUND = 2  # idle queues whose depths one metrics sample refreshes (round-robin)
PARK_MAX_QUEUES = 8  # a process serving up to this many queues parks their idle claims (one connection each)


class _PeakMiddleware(Middleware):
    def __init__(self, peak: st.ProcessPeak) -> None:
        self.peak = peak

    async def before_job(self, ctx: JobContext) -> None:
        self.peak.started()

    async def after_job(self, ctx: JobContext, outcome: JobOutcome) -> None:
        self.peak.finished()


def _gauges(worker: QueueWorker) -> tuple[Callable[[], float], Callable[[], float]]:
    return (lambda: float(worker.active)), (lambda: float(worker.stats.peak_active))


class WorkerService:
    """Runs the planned queues of `app` until stopped; see `health()` and `summary()`."""

    def __init__(self, app: Conveyor, settings: Settings, plan: Sequence[QueuePlan]) -> None:
        if not plan:
            raise ConfigurationError("no queues to run")
        self.app = app
        self.settings = settings
        self.plan = list(plan)
        self.worker_id = settings.worker_id or default_worker_id()
        self.metrics = Metrics({p.name: app.handlers(p.name) for p in self.plan})
        self.metrics.watch_parsers(lambda: app.document_parsers)
        self.peak = st.ProcessPeak()
        middleware = (
            *app.middleware,
            _PeakMiddleware(self.peak),
            JobLogMiddleware(),
            MetricsMiddleware(self.metrics),
        )
        durability = settings.durability()
        if durability is not None:
            app.durability = durability
        if settings.redis_max_connections < 1 or not settings.idle_calls_per_s > 0:
            raise ConfigurationError("CONVEYOR_REDIS_MAX_CONNECTIONS must be >= 1 and CONVEYOR_IDLE_CALLS_PER_S > 0")
        if not app.limit_connections(settings.redis_max_connections):
            logger.info("the app's Redis client exists already; its connection bound is left as it is")
        # One blocking wait for every idle queue and a bounded rate of idle housekeeping, so the
        # idle cost of the process does not grow with its number of queues (docs/scaling.md).
        # Each wait holds a connection: at most half of the bound, so trips always find one.
        self.wake_hub = WakeHub(app.client, groups=min(HUB_GROUPS, max(1, settings.redis_max_connections // 2)))
        self.pacer = Pacer(settings.idle_calls_per_s)
        self._health_client: RedisClient | None = None
        self._ping_lock = asyncio.Lock()
        self._sampled: dict[str, int] = {}  # trips of each queue's worker at its last depth sample
        self._live: dict[str, bool] = {}  # whether a queue had waiting, delayed or active jobs then
        self._idle_cursor = 0
        self.workers: dict[str, QueueWorker] = {}
        self.watches: dict[str, QueueWatch] = {}
        # A process of a few queues parks each idle queue's next claim in Redis (one blocking
        # connection per queue: pickup without a round trip after the wake-up); more queues share
        # the wake hub's few waits instead.
        park = len(self.plan) <= min(PARK_MAX_QUEUES, settings.redis_max_connections // 2)
        for p in self.plan:
            worker = app.worker(
                p.name,
                concurrency=p.concurrency,
                lease_ms=settings.lease_ms,
                stalled_interval_ms=settings.stalled_interval_ms,
                max_stalls=settings.max_stalls,
                max_lapses=settings.max_lapses,
                no_handler_timeout_s=settings.no_handler_timeout_s,
                shutdown_grace_s=settings.shutdown_grace_s,
                worker_id=self.worker_id,
                middleware=middleware,
                wake_hub=self.wake_hub,
                pacer=self.pacer,
                park_idle=park,
            )
            self.workers[p.name] = worker
            self.watches[p.name] = QueueWatch(
                worker, self.metrics, backoff_max_s=settings.restart_backoff_max_s
            )
            self.metrics.watch_queue(p.name, p.concurrency, *_gauges(worker))
        self.state = "starting"
        self.started_at = time.time()
        self.redis_ok = False
        self._redis_was_down = False
        self.redis_latency_s: float | None = None
        self.paused: dict[str, bool] = {p.name: False for p in self.plan}
        self.registry = RegistryWriter(
            app.client, app.prefix, self.worker_id, self.registry_record, settings.heartbeat_s
        )
        self.log = structlog.get_logger("conveyor.service")
        self._rates = st.RateWindow()
        self._logged_stats: dict[str, dict[str, Any]] = {}  # figures of each queue's last stats line
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._registry_task: asyncio.Task[None] | None = None
        self.scheduler: Scheduler | None = (
            app.scheduler(alerts_interval_s=settings.alerts_interval_s,
                          **({} if settings.maintenance else {"maintenance_interval_s": None}))
            if settings.scheduler else None
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Wait until Redis is usable, then start every queue and loop. Each first Redis call (ping,
        queue registration, queue start, scheduler start) is retried with backoff until it succeeds
        or a stop is requested, so a Redis fault while starting never ends the process."""
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("redis ping", self._ping_or_raise),
            ("queue registration", lambda: self.registry.register_queues(list(self.workers))),
            ("partition layouts check", self._warn_unserved),  # never raises a fault: a warning only
        ]
        steps += [(f"queue {name} start", worker.start) for name, worker in self.workers.items()]
        if self.scheduler is not None:
            steps.append(("scheduler start", self.scheduler.start))
        for what, step in steps:
            if not await self._until_usable(what, step):
                return
        self.state = "running"
        self._tasks = [
            asyncio.create_task(w.run(), name=f"conveyor-watch-{q}") for q, w in self.watches.items()
        ]
        self._registry_task = self._every(self.settings.heartbeat_s, self.registry.beat, "registry heartbeat")
        self._tasks += [
            self._registry_task,
            self._every(self.settings.metrics_interval_s, self.sample, "metrics sample"),
        ]
        if self.settings.stats_interval_s > 0:
            self._tasks.append(
                self._every(self.settings.stats_interval_s, self._log_stats, "stats line", skip_first=True)
            )
        self.log.info(
            "worker started",
            worker_id=self.worker_id,
            version=__version__,
            queues={p.name: p.concurrency for p in self.plan},
        )

    async def _warn_unserved(self) -> None:
        """Say so when jobs wait in partitions this process does not serve (a producer using
        another partition count than this worker, docs/scaling.md): they would wait silently. One
        round trip for every queue's record, more only for a queue with jobs where it does not look;
        run before the queues start, so it adds nothing to their idle traffic."""
        try:
            layouts = await read_layouts(self.app.client, self.app.prefix, list(self.workers))
        except ConnectionFailedError:
            return  # a check, not a step: Redis faults are met by the loops
        for name, worker in self.workers.items():
            try:
                unserved = await unserved_jobs(worker.queue, layouts[name])
            except ConnectionFailedError:
                continue
            for count, jobs in sorted(unserved.items()):
                layout = "the plain queue" if count == 0 else f"the {count}-partition layout"
                self.log.warning(
                    "jobs wait in partitions this worker does not serve; declare previous_partitions to serve them",
                    queue=name, jobs=jobs, layout=layout,
                )

    async def _ping_or_raise(self) -> None:
        if not await self.ping():
            raise ConnectionFailedError("redis did not answer PING")

    async def _until_usable(self, what: str, step: Callable[[], Awaitable[None]]) -> bool:
        def retrying(exc: BaseException, delay: float) -> None:
            self.log.warning("redis not usable at start; retrying", step=what,
                             error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)

        return await until_usable(step, self._stop, retrying)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> dict[str, Any]:
        """Start, wait for `request_stop()`, stop; returns the summary."""
        await self.start()
        await self._stop.wait()
        return await self.stop()

    async def stop(self, grace_s: float | None = None) -> dict[str, Any]:
        """Stop claiming everywhere at once, let active jobs finish up to the grace, hand the rest back."""
        if self.state in ("stopping", "stopped"):
            return self.summary()
        self.state = "stopping"
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        active = sum(w.active for w in self.workers.values())
        self.log.info("worker stopping", active_jobs=active, grace_s=grace)
        watches, others = self._tasks[: len(self.watches)], self._tasks[len(self.watches) :]
        for task in watches:  # loops ending during close are not crashes
            task.cancel()
        for name, watch in self.watches.items():  # a dead loop must run again to record final outcomes
            for loop in list(watch.dead):
                self.workers[name].restart_loop(loop)
        closing = [asyncio.create_task(w.close(grace)) for w in self.workers.values()]
        background = [t for t in others if t is not self._registry_task]
        await cancel_and_wait(watches + background)
        await asyncio.gather(*closing, return_exceptions=True)
        if self._registry_task is not None:  # kept beating while jobs finished, so the record stayed live
            await cancel_and_wait([self._registry_task])
        if self.scheduler is not None:
            await self.scheduler.close()
        if self.redis_ok or await self.ping():
            await self.registry.remove()
        await self.wake_hub.close()
        await self.app.close()
        if self._health_client is not None:
            await self._health_client.aclose()
            self._health_client = None
        self.state = "stopped"
        result = self.summary()
        self.log.info("worker stopped: summary", **result)
        for name, worker in self.workers.items():
            self.log.info("queue summary", queue=name, **st.queue_counts(worker))
        return result

    # ------------------------------------------------------------------ control

    async def pause(self, queues: Iterable[str] | None = None) -> None:
        """Set the paused flag of some (default all) queues: every process stops claiming them."""
        for name in self._select(queues):
            await self.workers[name].queue.pause()
            self.paused[name] = True
            self.metrics.paused.labels(name).set(1)

    async def resume(self, queues: Iterable[str] | None = None) -> None:
        for name in self._select(queues):
            await self.workers[name].queue.resume()
            self.paused[name] = False
            self.metrics.paused.labels(name).set(0)

    def _select(self, queues: Iterable[str] | None) -> list[str]:
        names = list(self.workers) if queues is None else list(queues)
        unknown = [q for q in names if q not in self.workers]
        if unknown:
            raise ConfigurationError(f"this service does not run queue(s) {unknown}")
        return names

    # ------------------------------------------------------------------ observation

    async def ping(self) -> bool:
        """PING Redis on the health check's own connection (never queued behind the queues'
        traffic); records reachability and round-trip time."""
        if self.state == "stopped":  # the clients are closed; do not open new ones
            return False
        async with self._ping_lock:  # one connection: concurrent /health requests take turns
            if self._health_client is None:
                self._health_client = connect(self.app.redis_url, max_connections=1, socket_timeout=PING_TIMEOUT_S)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(PING_TIMEOUT_S):
                    await self._health_client.ping()
            except Exception:
                self.redis_ok, self.redis_latency_s = False, None
                self._redis_was_down = True
            else:
                self.redis_ok, self.redis_latency_s = True, time.perf_counter() - started
                if self._redis_was_down:  # back: connections pooled before the fault are dead
                    self._redis_was_down = False
                    await drop_idle_connections(self.app.client)
        self.metrics.observe_redis(self.redis_latency_s)
        return self.redis_ok

    async def sample(self) -> None:
        """Periodic collector: Redis latency, queue depths per state, limits and paused flags. Queues
        with activity since their last sample (or jobs waiting, delayed or active then) are sampled
        every time; idle ones a few per round in turn, so sampling 1,000 idle queues costs what a
        few busy ones do."""
        if not await self.ping():
            return
        names = list(self.workers)
        for name in names:  # a queue not sampled yet counts as idle until it makes a trip
            self._sampled.setdefault(name, self.workers[name].trips)
        due = [n for n in names if self._live.get(n, False) or self._sampled[n] != self.workers[n].trips]
        chosen = set(due)
        idle = [n for n in names if n not in chosen]
        turn: list[str] = []
        if idle:
            start = self._idle_cursor % len(idle)
            turn = (idle[start:] + idle[:start])[:IDLE_SAMPLES_PER_ROUND]
            self._idle_cursor = start + IDLE_SAMPLES_PER_ROUND
        for name in due + turn:
            worker = self.workers[name]
            self._sampled[name] = worker.trips
            counts = await worker.queue.counts()
            self._live[name] = any(counts[s] for s in (JobState.WAITING, JobState.DELAYED, JobState.ACTIVE))
            self.metrics.set_depths(name, counts)
            self.metrics.set_flow_totals(name, await worker.queue.flow_counts())
            if name in due:  # an idle queue's limits do not move; its depths and flag are enough
                self.metrics.set_limits(name, await worker.queue.limits_state(max_groups=1))
            self.paused[name] = await worker.queue.is_paused()
            self.metrics.paused.labels(name).set(1 if self.paused[name] else 0)
        for limiter in sorted(self.app.limiters):
            try:
                self.metrics.set_limiter(await SharedLimiter(self.app.client, limiter, self.app.prefix).state())
            except UnknownLimiterError:
                continue  # declared by the app, written by the first worker of a queue using it
        await self.metrics.costs.sample(CostLedger(self.app.client, self.app.prefix))

    def problems(self) -> list[str]:
        found = []
        if self.state != "running":
            found.append(f"service is {self.state}")
        if not self.redis_ok:
            found.append("redis unreachable")
        found += [f"queue {q}: loop down ({w.last_error})" for q, w in self.watches.items() if not w.healthy]
        return found

    async def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) for GET /health: 503 while Redis is unreachable or a queue loop is down."""
        await self.ping()
        problems = self.problems()
        queues = {}
        for name, worker in self.workers.items():
            watch = self.watches[name]
            queues[name] = {
                **st.queue_counts(worker),
                "loop": "running" if watch.healthy else "down",
                "restarts": watch.restarts,
                "last_error": watch.last_error,
                "paused": self.paused[name],
            }
        body = {
            "status": "ok" if not problems else ("unhealthy" if self.state == "running" else self.state),
            "problems": problems,
            "uptime_s": round(time.time() - self.started_at, 3),
            "worker_id": self.worker_id,
            "version": __version__,
            "redis": {
                "ok": self.redis_ok,
                "latency_ms": None if self.redis_latency_s is None else round(self.redis_latency_s * 1000, 3),
            },
            "queues": queues,
        }
        return (200 if not problems else 503), body

    def summary(self) -> dict[str, Any]:
        return st.summary(self.workers, time.time() - self.started_at, self.peak.peak)

    def registry_record(self) -> dict[str, Any]:
        counts = {}
        for name, worker in self.workers.items():
            s = worker.stats
            counts[name] = {
                "processed": s.processed,
                "succeeded": s.succeeded,
                "failed": s.failed,
                "active": worker.active,
            }
        return {
            "id": self.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": [p.name for p in self.plan],
            "concurrency": {p.name: p.concurrency for p in self.plan},
            "version": __version__,
            "started_ms": int(self.started_at * 1000),
            "counts": counts,
        }

    async def _log_stats(self) -> None:
        """One line per queue whose figures changed since its last line; an idle queue stays quiet."""
        for name, worker in self.workers.items():
            figures = self._stats_figures(name, worker)
            rate = self._rates.per_minute(name, figures["processed"])
            if self._logged_stats.get(name) == figures:
                continue
            self._logged_stats[name] = figures
            success = st.success_rate(figures["succeeded"], figures["failed"])
            self.log.info("queue stats", queue=name, jobs_per_min=rate, success_rate=success, **figures)

    def _stats_figures(self, name: str, worker: QueueWorker) -> dict[str, Any]:
        counts = st.queue_counts(worker)
        return {
            "restarts": self.watches[name].restarts,
            "paused": self.paused[name],
            **{k: v for k, v in counts.items() if k not in ("last_heartbeat", "success_rate")},
        }

    def _every(
        self, interval_s: float, fn: Callable[[], Awaitable[None]], what: str, *, skip_first: bool = False
    ) -> asyncio.Task[None]:
        async def loop() -> None:
            if skip_first:
                self._rates_prime()
                await asyncio.sleep(interval_s)
            while True:
                try:
                    await fn()
                except Exception as exc:
                    logger.warning("%s failed: %s", what, exc)
                await asyncio.sleep(interval_s)

        return asyncio.create_task(loop(), name=f"conveyor-{what.replace(' ', '-')}")

    def _rates_prime(self) -> None:
        for name, worker in self.workers.items():
            self._rates.per_minute(name, worker.stats.processed)
            self._logged_stats[name] = self._stats_figures(name, worker)
