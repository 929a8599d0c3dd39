"""The application object: a registry of typed tasks and their queues, sharing one Redis client."""

from __future__ import annotations

import inspect
import typing
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import TypeAdapter, ValidationError

from conveyor.alerts.rules import RuleBase, parse_rule
from conveyor.backoff import BackoffFunction, BackoffPolicies, Named
from conveyor.discovery import resolve_redis_url
from conveyor.errors import ConfigurationError, PayloadValidationError, UnknownLimiterError, Unrecoverable
from conveyor.flows.model import FlowNode, OnChildFailure
from conveyor.job import Job
from conveyor.limits.named import Limiter, LimiterUse, merge_uses
from conveyor.middleware import Middleware
from conveyor.options import JobOptions, JobSpec
from conveyor.partitions import PartitionedQueue, PartitionedWorker
from conveyor.partitions.queue import checked_partition_counts
from conveyor.queue import Queue
from conveyor.redis.connection import RedisClient, SyncRedisClient, connect, connect_sync
from conveyor.redis.durability import Durability
from conveyor.schedules.declare import declare, interval_seconds
from conveyor.schedules.model import Schedule
from conveyor.schedules.scheduler import Scheduler
from conveyor.sync import Enqueued, SyncQueue, job_options
from conveyor.worker import JobContext, Worker

R = TypeVar("R")
DEFAULT_QUEUE = "default"
DEFAULT_CONCURRENCY = 10


@dataclass(frozen=True, slots=True)
class QueueConfig:
    name: str
    concurrency: int = DEFAULT_CONCURRENCY
    defaults: JobOptions | None = None
    durability: Durability | None = None  # None: the app's
    limiters: tuple[LimiterUse, ...] = ()  # named limiters every job of the queue goes through
    partitions: int | None = None  # a partitioned queue (conveyor.partitions, docs/scaling.md)
    previous_partitions: int | None = None  # the count before a re-partition, served until empty


def _field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


class HeldThreads(Protocol):
    """Threads a built-in handler runs outside the workers' slots (the documents handler's parsers),
    counted so the worker service can export them as metrics."""

    @property
    def running(self) -> int: ...

    @property
    def abandoned(self) -> int: ...


class Task(Generic[R]):
    """A declared task: `await task.enqueue(payload, **options)` validates and enqueues."""

    def __init__(self, app: Conveyor, fn: Callable[..., Any], *, queue: str, name: str, defaults: JobOptions) -> None:
        self.app = app
        self.fn = fn
        self.queue_name = queue
        self.name = name
        self.defaults = defaults
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters.values())
        if not params:
            raise ConfigurationError(f"task {name!r} must take (ctx) or (ctx, payload)")
        self.takes_payload = len(params) >= 2
        payload_type = hints.get(params[1].name, Any) if self.takes_payload else type(None)
        self.payload_type: Any = payload_type
        self.result_type: Any = hints.get("return", Any)
        self.payload_adapter: TypeAdapter[Any] = TypeAdapter(payload_type)
        self.result_adapter: TypeAdapter[Any] = TypeAdapter(self.result_type)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.limiters: tuple[LimiterUse, ...] = ()

    def __repr__(self) -> str:
        return f"Task({self.queue_name}:{self.name})"

    def validate(self, payload: Any) -> Any:
        """The payload checked against the declared type, as JSON-ready data."""
        try:
            value = self.payload_adapter.validate_python(payload)
            return self.payload_adapter.dump_python(value, mode="json")
        except ValidationError as exc:
            raise PayloadValidationError(self.name, _field_errors(exc)) from None

    def payload_schema(self) -> dict[str, Any]:
        return self.payload_adapter.json_schema()

    def result_schema(self) -> dict[str, Any]:
        return self.result_adapter.json_schema()

    def spec(self, payload: Any = None, **options: Any) -> JobSpec:
        return JobSpec(self.name, self.validate(payload), job_options(options).merged_over(self.defaults))

    def node(
        self, payload: Any = None, *, children: Sequence[FlowNode] = (),
        on_child_failure: OnChildFailure | str | None = None, **options: Any,
    ) -> FlowNode:
        """This task as a flow node (payload validated now, before anything is written): it runs
        after its `children`, which may be nodes of any task on any queue (docs/flows.md)."""
        return FlowNode(self.queue_name, self.name, self.validate(payload),
                        job_options(options).merged_over(self.defaults), tuple(children), on_child_failure)

    def then(self, **options: Any) -> FlowNode:
        """This task as a chain step whose payload is the previous step's result (checked against
        the payload type when the step runs)."""
        return FlowNode(self.queue_name, self.name, None, job_options(options).merged_over(self.defaults),
                        pipe=True)

    async def enqueue(self, payload: Any = None, **options: Any) -> Job[R]:
        return (await self.enqueue_many([payload], **options))[0]

    async def enqueue_many(self, payloads: Iterable[Any], **options: Any) -> list[Job[R]]:
        specs = [self.spec(p, **options) for p in payloads]
        return await self.app.queue(self.queue_name).add_specs(specs, parse=self.parse_result)

    def enqueue_sync(self, payload: Any = None, **options: Any) -> Enqueued:
        """`enqueue` without an event loop (Django, Flask, scripts): same validation, options, errors."""
        return self.enqueue_many_sync([payload], **options)[0]

    def enqueue_many_sync(self, payloads: Iterable[Any], **options: Any) -> list[Enqueued]:
        specs = [self.spec(p, **options) for p in payloads]
        return self.app.sync_queue(self.queue_name).add_specs(specs)

    def parse_result(self, value: Any) -> R:
        return self.result_adapter.validate_python(value)  # type: ignore[no-any-return]

    async def handle(self, ctx: JobContext, data: Any) -> Any:
        """The worker-side entry: parse the stored payload, run, dump the result to JSON data."""
        args = self._args(ctx, data)
        result = await self.fn(*args)
        return self.result_adapter.dump_python(result, mode="json")

    def handle_sync(self, ctx: JobContext, data: Any) -> Any:
        result = self.fn(*self._args(ctx, data))
        return self.result_adapter.dump_python(result, mode="json")

    def _args(self, ctx: JobContext, data: Any) -> tuple[Any, ...]:
        if not self.takes_payload:
            return (ctx,)
        try:
            return (ctx, self.payload_adapter.validate_python(data))
        except ValidationError as exc:
            raise Unrecoverable(f"stored payload does not match {self.name!r}: {_field_errors(exc)}") from None

    @property
    def handler(self) -> Callable[[JobContext, Any], Any]:
        return self.handle if self.is_async else self.handle_sync


class Conveyor:
    """Holds tasks, queue settings and one shared Redis client."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        prefix: str = "cv",
        middleware: Sequence[Middleware] = (),
        name: str = "conveyor",
        durability: Durability | None = None,
    ) -> None:
        """`durability`: for every queue that does not set its own, wait for replicas and/or the AOF
        before enqueues and outcomes are acknowledged (docs/reliability.md)."""
        self._redis_url = redis_url
        self.durability = durability
        self.prefix = prefix
        self.middleware = tuple(middleware)
        self.name = name
        self.tasks: dict[tuple[str, str], Task[Any]] = {}
        self.queue_configs: dict[str, QueueConfig] = {}
        self._client: RedisClient | None = None
        self._max_connections: int | None = None
        self._queues: dict[str, Queue] = {}
        self._sync_client: SyncRedisClient | None = None
        self._sync_queues: dict[str, SyncQueue] = {}
        self.schedules: dict[str, Schedule] = {}
        self.backoffs = BackoffPolicies()
        self.alerts: dict[str, RuleBase] = {}
        self.limiters: dict[str, Limiter] = {}
        # Set by the documents handler (conveyor.handlers.install): the service's metrics read it.
        self.document_parsers: HeldThreads | None = None

    @property
    def redis_url(self) -> str:
        return resolve_redis_url(self._redis_url)

    def use_redis(self, url: str) -> None:
        """Point the app at a Redis URL before first use (the CLI and tests do this)."""
        if self._client is not None or self._sync_client is not None:
            raise ConfigurationError("the app is already connected; set the URL before first use")
        self._redis_url = url

    @asynccontextmanager
    async def bound(self, redis_url: str, *, prefix: str | None = None) -> AsyncIterator[Conveyor]:
        """Use `redis_url` (and key `prefix`) inside the block, then restore the app as it was: the
        pytest plugin binds the user's app to each test's server and prefix this way."""
        saved = (self._redis_url, self.prefix)
        await self.close()
        self._redis_url, self.prefix = redis_url, prefix or self.prefix
        try:
            yield self
        finally:
            await self.close()
            self._redis_url, self.prefix = saved

    def limit_connections(self, max_connections: int) -> bool:
        """Bound the shared client's connections (the worker service does, so a process serving any
        number of queues holds a fixed number). False when the client exists already (unchanged)."""
        if self._client is not None:
            return False
        self._max_connections = max_connections
        return True

    @property
    def client(self) -> RedisClient:
        if self._client is None:
            extra = {} if self._max_connections is None else {"max_connections": self._max_connections}
            self._client = connect(self.redis_url, **extra)
        return self._client

    @property
    def sync_client(self) -> SyncRedisClient:
        """A synchronous client (thread-safe pool) for `enqueue_sync`; created on first use."""
        if self._sync_client is None:
            self._sync_client = connect_sync(self.redis_url)
        return self._sync_client

    def sync_queue(self, name: str) -> SyncQueue:
        """The synchronous enqueue side of queue `name` (same defaults and middleware as `queue`)."""
        q = self._sync_queues.get(name)
        if q is None:
            config = self.queue_configs.get(name)
            if config is not None and config.partitions is not None:  # it would write past the partitions
                raise ConfigurationError(
                    f"queue {name!r} is partitioned: enqueue through app.queue(), not the synchronous producer")
            q = SyncQueue(
                name, redis=self.sync_client, prefix=self.prefix, middleware=self.middleware,
                defaults=config.defaults if config else None, durability=self._durability(config),
            )
            self._sync_queues[name] = q
        return q

    def _durability(self, config: QueueConfig | None) -> Durability | None:
        return config.durability if config and config.durability else self.durability

    def declare_queue(
        self, name: str, *, concurrency: int = DEFAULT_CONCURRENCY, defaults: JobOptions | None = None,
        durability: Durability | None = None, limiters: Sequence[LimiterUse] = (),
        partitions: int | None = None, previous_partitions: int | None = None,
    ) -> QueueConfig:
        """`partitions`: spread the queue over that many partitions, each in its own Cluster slot
        (docs/scaling.md); `previous_partitions`: the count before a re-partition, whose
        partitions are still served until empty."""
        if previous_partitions is not None and partitions is None:
            raise ConfigurationError("previous_partitions needs partitions")
        if partitions is not None:  # refused here, not at the first app.queue() or worker start
            checked_partition_counts(partitions, previous_partitions)
        config = QueueConfig(name, concurrency, defaults, durability, tuple(limiters), partitions,
                             previous_partitions)
        self.queue_configs[name] = config
        return config

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        queue: str = DEFAULT_QUEUE,
        name: str | None = None,
        concurrency: int | None = None,
        limiters: Sequence[LimiterUse] = (),
        **defaults: Any,
    ) -> Any:
        """Declare a task: `@app.task(queue="ai", attempts=3, timeout=60)` over `async def f(ctx, payload: M)`.
        `limiters`: named limiters its jobs go through (the worker of its queue admits every claim by
        the limiters of all the queue's tasks, at the largest estimate; docs/limits.md)."""

        def register(f: Callable[..., Any]) -> Task[Any]:
            task_name = name or f.__name__
            try:
                task_defaults = JobOptions(**defaults)
            except TypeError as exc:
                raise ConfigurationError(f"task {task_name!r}: {exc}") from None
            if (queue, task_name) in self.tasks:
                raise ConfigurationError(f"task {task_name!r} is declared twice on queue {queue!r}")
            config = self.queue_configs.get(queue)
            if config is None:
                self.declare_queue(queue, concurrency=concurrency or DEFAULT_CONCURRENCY)
            elif concurrency is not None and concurrency != config.concurrency:
                raise ConfigurationError(
                    f"queue {queue!r} concurrency declared as {config.concurrency} and {concurrency}"
                )
            task: Task[Any] = Task(self, f, queue=queue, name=task_name, defaults=task_defaults)
            task.limiters = tuple(limiters)
            self.tasks[(queue, task_name)] = task
            return task

        return register(fn) if fn is not None else register

    def limiter(self, limiter: Limiter) -> Limiter:
        """Declare a named limiter (written to Redis when a worker of a queue using it starts)."""
        if not isinstance(limiter, Limiter):
            raise ConfigurationError(f"expected a Limiter, got {limiter!r}")
        if limiter.name in self.limiters and self.limiters[limiter.name] != limiter:
            raise ConfigurationError(f"limiter {limiter.name!r} is declared twice, differently")
        self.limiters[limiter.name] = limiter
        return limiter

    def limiter_uses(self, queue: str) -> list[LimiterUse]:
        """The named limiters a worker of `queue` admits claims by: the queue's and its tasks'."""
        config = self.queue_configs.get(queue)
        uses = list(config.limiters if config else ())
        for (q, _), task in self.tasks.items():
            if q == queue:
                uses += task.limiters
        for use in uses:
            if use.name not in self.limiters:
                raise UnknownLimiterError(f"queue {queue!r} uses limiter {use.name!r}, which this app does not declare")
        return merge_uses(uses)

    def backoff_policy(self, name: str, fn: BackoffFunction) -> Named:
        """Register `fn(attempt, error) -> seconds` as backoff policy `name`; pass the returned `Named`
        as `backoff=`. Jobs store only the name, and this app's workers run only registered functions."""
        return self.backoffs.register(name, fn)

    def cron(self, expression: str, **options: Any) -> Callable[[Callable[..., Any]], Task[Any]]:
        """Declare a task that runs on a cron schedule: `@app.cron("0 3 * * *", tz="Europe/Madrid")`
        (options as for `task`, plus id, data, start, end, missed, catch_up_cap, paused)."""
        return declare(self, cron=expression, **options)

    def every(
        self, *, seconds: float = 0, minutes: float = 0, hours: float = 0, days: float = 0, **options: Any
    ) -> Callable[[Callable[..., Any]], Task[Any]]:
        """Declare a task that runs at a fixed interval: `@app.every(minutes=15)`."""
        return declare(self, interval_s=interval_seconds(seconds, minutes, hours, days), **options)

    def alert(self, kind: str, *, id: str, queue: str, channels: Sequence[Any], **params: Any) -> RuleBase:
        """Declare an alert rule (docs/alerts.md), written to Redis when a scheduler starts:
        `app.alert("queue_depth", id="emails-backlog", queue="emails", threshold=1000,
        channels=[{"type": "slack", "url": "https://hooks.slack.com/services/..."}])`."""
        if id in self.alerts:
            raise ConfigurationError(f"alert rule {id!r} is declared twice")
        rule = parse_rule({"kind": kind, "id": id, "queue": queue, "channels": list(channels), **params})
        self.alerts[id] = rule
        return rule

    def scheduler(self, *, alerts_interval_s: float | None = None, **options: Any) -> Scheduler:
        """A scheduler for this app's declared schedules (see `conveyor.schedules.Scheduler`) that also
        evaluates alert rules every `alerts_interval_s` (default 15 s)."""
        from conveyor.alerts.evaluator import DEFAULT_INTERVAL_S, alerts_builtin

        interval = DEFAULT_INTERVAL_S if alerts_interval_s is None else alerts_interval_s
        builtin = alerts_builtin(self.client, self.prefix, self.alerts.values(), interval)
        return Scheduler(self.client, prefix=self.prefix, schedules=self.schedules.values(),
                         builtins=[builtin], **options)

    # ------------------------------------------------------------------ flows (docs/flows.md)

    async def flow(self, root: FlowNode) -> Job[Any]:
        """Start a flow: every node is checked (a declared task for its queue, payload, options)
        before anything is written. Returns the root job (its result parsed as its task's)."""
        from conveyor.flows.producer import FlowProducer

        task = self.get_task(root.queue, root.name)
        return await FlowProducer(self.queue).add(root, check=self.check_node,
                                                  parse=task.parse_result if task else None)

    def check_node(self, node: FlowNode, path: str) -> None:
        """A flow node must name a task this app declares on its queue."""
        from conveyor.errors import InvalidFlowError

        if (node.queue, node.name) not in self.tasks:
            raise InvalidFlowError(path, f"no task {node.name!r} is declared on queue {node.queue!r}")

    @staticmethod
    def chain(*steps: FlowNode) -> FlowNode:
        """Steps that run one after another: `app.chain(fetch.node(url), parse.then(), store.then())`;
        each `then()` step gets the previous step's result as its payload. Returns the last step (the
        flow's root), to pass to `flow`."""
        if not steps:
            raise ValueError("a chain needs at least one step")
        node = steps[0]
        for step in steps[1:]:
            node = step.with_children([node])
        return node

    @staticmethod
    def fan_in(
        parent: FlowNode, children: Sequence[FlowNode], *, on_child_failure: OnChildFailure | str | None = None
    ) -> FlowNode:
        """`children` run in parallel, then `parent` runs with their results (`ctx.children()`)."""
        return parent.with_children(children, on_child_failure)

    def get_task(self, queue: str, name: str) -> Task[Any] | None:
        return self.tasks.get((queue, name))

    def queue(self, name: str) -> Queue:
        q = self._queues.get(name)
        if q is None:
            config = self.queue_configs.get(name)
            options: dict[str, Any] = {
                "redis": self.client, "prefix": self.prefix, "middleware": self.middleware,
                "defaults": config.defaults if config else None, "durability": self._durability(config),
            }
            if config is not None and config.partitions is not None:
                q = PartitionedQueue(name, partitions=config.partitions, previous=config.previous_partitions,
                                     **options)
            else:
                q = Queue(name, **options)
            self._queues[name] = q
        return q

    def handlers(self, queue: str) -> dict[str, Any]:
        return {t.name: t.handler for (q, _), t in self.tasks.items() if q == queue}

    def worker(self, queue: str, **options: Any) -> Worker | PartitionedWorker:
        """A worker for one declared queue, running every task declared on it."""
        if queue not in self.queue_configs:
            raise ConfigurationError(f"queue {queue!r} is not declared by this app")
        options.setdefault("concurrency", self.queue_configs[queue].concurrency)
        options.setdefault("middleware", self.middleware)
        options.setdefault("backoffs", self.backoffs)
        uses = self.limiter_uses(queue)
        if uses:
            options.setdefault("limiters", uses)
            options.setdefault("declare_limiters", [self.limiters[u.name] for u in uses])
        q = self.queue(queue)
        if isinstance(q, PartitionedQueue):
            return PartitionedWorker(q, self.handlers(queue), **options)
        return Worker(q, self.handlers(queue), **options)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._queues.clear()
        self.close_sync()

    def close_sync(self) -> None:
        """Close the synchronous client (if one was made); `close()` does this too."""
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None
        self._sync_queues.clear()
