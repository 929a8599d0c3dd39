"""JobContext: what a handler gets besides its payload."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from conveyor import codec
from conveyor.errors import (
    ConnectionFailedError,
    LeaseLostError,
    SerializationError,
    UsageReportError,
    WaitForChildren,
)
from conveyor.limits.named import Usage
from conveyor.options import COST_MAX
from conveyor.redis.codes import ScriptCode
from conveyor.redis.faults import guarded
from conveyor.worker.lease import Stop

if TYPE_CHECKING:
    from conveyor.flows.model import FlowNode, OnChildFailure
    from conveyor.flows.results import ChildResults
    from conveyor.job import Job
    from conveyor.queue import Queue
    from conveyor.redis.scripts import QueueScripts
    from conveyor.worker.lease import Lease

T = TypeVar("T")

MAX_LOG_LINES = 1000
MAX_LOG_LINE_CHARS = 8192
MAX_STEP_BYTES = 512 * 1024  # a durable step's stored result, as a job result
# A progress value, as JSON: stored on the job; its event carries it up to events.EVENT_VALUE_BYTES.
MAX_PROGRESS_BYTES = 64 * 1024
MAX_STEP_NAME = 200
# How long progress() and log() ride out a Redis fault (resending, with backoff) before they raise
# ConnectionFailedError; they stop sooner once the worker knows the lease is lost.
FAULT_RIDE_S = 30.0
# A job's streamed output is kept up to this many bytes (UTF-8); chunks past it are dropped.
MAX_OUTPUT_BYTES = 1024 * 1024
_PIECE_CHARS = 16 * 1024  # at most 64 KiB of UTF-8 per piece (an event carries it up to 1 KiB)


class JobContext:
    """Per-run view of a job: identity, attempt, and progress/log calls fenced by the lease. The
    lease's state (cancellation, loss) lives in the worker's lease owner; this reads it."""

    __slots__ = (
        "_adds", "_lease", "_queues", "_scripts", "_streams", "attempt", "cost_used", "data", "job_id", "loop",
        "max_attempts", "name", "options", "queue", "state", "token", "usage", "worker_id",
    )

    def __init__(
        self,
        scripts: QueueScripts,
        queue: str,
        worker_id: str,
        job_id: str,
        token: str,
        attempt: int,
        name: str,
        data: Any,
        options: dict[str, Any],
        lease: Lease | None = None,
    ) -> None:
        self._scripts = scripts
        self._lease = lease
        self.queue = queue
        self.worker_id = worker_id
        self.job_id = job_id
        self.token = token
        self.attempt = attempt
        self.name = name
        self.data = data
        self.options = options
        self.max_attempts: int = options.get("attempts", 1)
        self.loop: asyncio.AbstractEventLoop | None = None
        # Units this run actually used (e.g. LLM tokens); set through report_cost, read by limits.
        self.cost_used: int | None = None
        # Tokens this run used (report_usage): corrects the named limiters and feeds cost accounting.
        self.usage: Usage | None = None
        # Free-form per-run state for middleware (start times, spans...).
        self.state: dict[str, Any] = {}
        self._adds = 0  # add_children calls this run (names the children's ids)
        self._streams = 0  # stream calls this run (numbers them, so a resend is recognised)
        self._queues: dict[str, Queue] = {}

    def __repr__(self) -> str:
        return f"JobContext(queue={self.queue!r}, id={self.job_id!r}, name={self.name!r}, attempt={self.attempt})"

    async def progress(self, value: Any) -> None:
        """Record progress (any JSON value, e.g. a percentage or {"done": 3, "total": 10}) of at most
        `MAX_PROGRESS_BYTES` as JSON; a larger one raises SerializationError and writes nothing."""
        encoded = codec.dumps(value)
        if len(encoded) > MAX_PROGRESS_BYTES:
            raise SerializationError(
                f"progress is {len(encoded)} bytes as JSON, over the limit of {MAX_PROGRESS_BYTES}")
        text = encoded.decode()
        code = await self._riding_faults(lambda: self._scripts.progress(self.job_id, self.token, text))
        self._fenced(code)

    async def log(self, line: str) -> None:
        """Append a line to the job's log (the last 1,000 lines are kept). Across a Redis fault the
        line is sent again, so a line whose reply was lost may be in the log twice."""
        text = str(line)[:MAX_LOG_LINE_CHARS]
        code = await self._riding_faults(lambda: self._scripts.log(self.job_id, self.token, text, MAX_LOG_LINES))
        self._fenced(code)

    async def _riding_faults(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, sent again with backoff while Redis is not usable (for writes that are safe to
        resend), for up to FAULT_RIDE_S or until the worker knows the lease is lost: a blip of Redis
        must not fail the run that reported progress through it."""
        failures = 0
        deadline = time.monotonic() + FAULT_RIDE_S
        while True:
            try:
                return await call()
            except ConnectionFailedError:
                failures += 1
                if self.lease_lost or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(min(1.0, 0.05 * 2 ** min(failures, 5)))

    async def stream(self, chunk: str) -> bool:
        """Publish partial output (e.g. an LLM's tokens): appended to the job's output, which clients
        follow live (SSE `output` events) and read whole later. The output holds one attempt's text,
        at most `MAX_OUTPUT_BYTES` bytes: a chunk that would pass the limit, and every chunk after
        it, is dropped, the output is marked truncated, and False is returned (the run goes on, and
        the kept output stays a prefix of what was streamed). True when appended."""
        if not isinstance(chunk, str):
            raise TypeError(f"stream() takes a str chunk, got {type(chunk).__name__}")
        if not chunk:
            return True
        if len(chunk) > MAX_OUTPUT_BYTES:  # more characters than the limit has bytes: cannot fit
            chunk = chunk[: MAX_OUTPUT_BYTES + 1]
        # A long chunk goes as pieces of at most 64 KiB (one event each), so no event is huge.
        pieces = [chunk[i : i + _PIECE_CHARS].encode() for i in range(0, len(chunk), _PIECE_CHARS)]
        self._streams += 1
        call = self._streams  # the same number when sent again: the script answers a resend as the first send
        code, _offset, kept = await self._riding_faults(
            lambda: self._scripts.stream(self.job_id, self.token, pieces, MAX_OUTPUT_BYTES, call))
        if code == ScriptCode.INVALID_INPUT:
            raise ValueError("stream(): the script refused its arguments")
        self._fenced(code)
        return kept

    def report_cost(self, units: int) -> None:
        """Report the units this run really used, so a cost-weighted limit's budget is corrected."""
        if isinstance(units, bool) or not isinstance(units, int) or not 0 <= units <= COST_MAX:
            raise ValueError(f"cost units must be an integer in [0, {COST_MAX}]")
        self.cost_used = units

    def report_usage(self, tokens_in: int = 0, tokens_out: int = 0, model: str | None = None) -> None:
        """Report the tokens this run really used (as the provider reported them), optionally of
        which `model`: the named limiters the job went through are corrected by (reported -
        estimated), and cost accounting prices them, when the run ends. Once per run; negative or
        absurd values raise UsageReportError."""
        if self.usage is not None:
            raise UsageReportError(f"usage of job {self.job_id} was already reported for this run")
        self.usage = Usage.of(tokens_in, tokens_out, model)

    def add_usage(self, tokens_in: int, tokens_out: int, model: str | None = None, *, estimated: bool = False) -> None:
        """Add to this run's usage (the built-in AI handlers, one call per provider request);
        `estimated`: these tokens are an estimate, not the provider's report (the ledger shows it)."""
        self.usage = (self.usage or Usage()).plus(Usage.of(tokens_in, tokens_out, model, estimated=estimated))

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked to cancel this job (the worker learns it at a heartbeat)."""
        return self._lease is not None and self._lease.cancel_requested

    @property
    def lease_lost(self) -> bool:
        """True once the worker knows this run's lease is gone (its writes would be rejected)."""
        return self._lease is not None and self._lease.stop is Stop.LOST

    @property
    def group(self) -> str | None:
        return self.options.get("group")

    def raise_if_cancelled(self) -> None:
        """For sync handlers (and long loops): end the run as cancelled if that was requested."""
        if self.cancel_requested:
            raise asyncio.CancelledError("job cancellation requested")

    def _fenced(self, code: int) -> None:
        if code != ScriptCode.OK:
            if self._lease is not None:
                self._lease.request_stop(Stop.LOST)
            raise LeaseLostError(f"job {self.job_id}: lease lost, write rejected")

    # ------------------------------------------------------------------ flows (docs/flows.md)

    async def children(self) -> ChildResults:
        """Results and errors of this job's flow children, keyed by "<queue>:<id>"."""
        from conveyor.flows.results import ChildResults

        key = self._scripts.k.job(self.job_id)
        h: Any = await self._riding_faults(lambda: guarded(self._scripts.client.hgetall(key), "reading children"))
        return ChildResults.from_hash(h)

    async def _has_children(self) -> bool:
        """Whether this job has flow children, read without their results (a parent of 10,000
        children holds 10,000 of them)."""
        key = self._scripts.k.job(self.job_id)
        found = await self._riding_faults(
            lambda: guarded(self._scripts.client.hexists(key, "kids"), "reading children"))
        return bool(found)

    async def previous(self) -> Any:
        """The result of this job's single child: the previous step of a chain."""
        return (await self.children()).only()

    def wait_for_children(self) -> NoReturn:
        """End this run now and run the job again once every child added so far has ended (the
        attempt is not counted). Call it after `add_children`; `children()` then has their results."""
        raise WaitForChildren("waiting for children")

    async def add_children(
        self, nodes: Sequence[FlowNode], *, on_child_failure: OnChildFailure | str | None = None,
        key: str | None = None,
    ) -> list[Job[Any]]:
        """Add flow children to this running job (validated before anything is written). Their ids
        derive from this job's id, `key` (default: the call's number in this run) and their position,
        so a re-run adds the same children, not more: compute the list deterministically (ctx.step).
        The same fixed ids make the call safe to send again: it rides out a Redis fault (a reply lost
        on the adoption or the write) as `step` does, rather than failing the run halfway."""
        from conveyor.flows.dynamic import add_children

        if key is None:
            key = f"c{self._adds}"
        self._adds += 1
        call_key = key
        return await self._riding_faults(lambda: add_children(
            self._queue_of, self.queue, self.job_id, self.token, nodes, call_key, on_child_failure))

    def _queue_of(self, name: str) -> Queue:
        from conveyor.queue import Queue

        q = self._queues.get(name)
        if q is None:
            q = Queue(name, redis=self._scripts.client, prefix=self._scripts.k.prefix,
                      events_maxlen=self._scripts.maxlen)
            self._queues[name] = q
        return q

    async def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A durable step: the stored result when a previous run of this job completed step `name`,
        else `fn(*args, **kwargs)` (awaited if it is a coroutine), stored (as JSON, at most 512 KiB)
        before it is returned. Results go with the job's record."""
        from conveyor.redis.flow_scripts import store_step

        if not isinstance(name, str) or not 0 < len(name) <= MAX_STEP_NAME or not name.isprintable():
            raise ValueError(f"a step name is 1-{MAX_STEP_NAME} printable characters")
        jk = self._scripts.k.job(self.job_id)
        raw = await self._riding_faults(lambda: guarded(self._scripts.client.hget(jk, "s:" + name), "reading a step"))
        if raw is not None:
            return codec.loads(raw)
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
        encoded = codec.dumps(value)
        if len(encoded) > MAX_STEP_BYTES:
            raise SerializationError(f"step {name!r} result is {len(encoded)} bytes, over {MAX_STEP_BYTES}")
        text = encoded.decode()  # stored once: a resend after a lost reply finds it there and writes nothing
        code = await self._riding_faults(
            lambda: store_step(self._scripts.client, self._scripts.k, self.job_id, self.token, name, text))
        self._fenced(code)
        return codec.loads(encoded)

    # Sync handlers run in threads; these helpers bridge to the worker's event loop.
    def progress_sync(self, value: Any) -> None:
        self._run_sync(self.progress(value))

    def log_sync(self, line: str) -> None:
        self._run_sync(self.log(line))

    def stream_sync(self, chunk: str) -> bool:
        """`stream` for sync handlers."""
        kept: bool = self._run_sync(self.stream(chunk))
        return kept

    def _run_sync(self, coro: Any) -> Any:
        if self.loop is None:
            coro.close()
            raise RuntimeError("the *_sync calls are for sync handlers running in the worker's threads")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()
