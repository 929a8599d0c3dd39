"""One service process serving 1,000 queues: connections bounded whatever the queue count (counted
by the server's CLIENT LIST), little Redis traffic while idle (INFO commandstats deltas), jobs picked
up on any queue, and a /health that stays honest while every queue is busy."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from conveyor import Conveyor, JobContext, JobState, Queue
from conveyor.redis.connection import RedisClient, connect
from conveyor.service import WorkerService, plan_queues
from conveyor.settings import Settings
from conveyor.testing import RedisServer
from tests.conftest import wait_for

QUEUES = 1000
MAX_CONNECTIONS = 50
MAX_IDLE_COMMANDS_PER_S = 50


def many_queue_app(prefix: str, n: int) -> Conveyor:
    app = Conveyor(prefix=prefix, name="many-queues")

    async def touch(ctx: JobContext, payload: Any) -> str:
        return ctx.queue

    for i in range(n):
        app.declare_queue(f"q{i:04d}", concurrency=2)
        app.task(touch, queue=f"q{i:04d}", name="touch")
    return app


@asynccontextmanager
async def service_of(app: Conveyor, url: str, **settings: Any) -> AsyncIterator[WorkerService]:
    app.use_redis(url)
    base: dict[str, Any] = {"heartbeat_s": 1.0, "stats_interval_s": 0,
                            "scheduler": False}
    service = WorkerService(app, Settings(**{**base, **settings}), plan_queues(app, None, {}))
    task = asyncio.create_task(service.run())
    try:
        await wait_for(lambda: service.state == "running", timeout=120, what="service running")
        yield service
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 120)


async def other_clients(probe: RedisClient) -> int:
    """Connections to the server other than the probe's own."""
    own = await probe.client_id()
    return sum(1 for c in await probe.client_list() if int(c["id"]) != own)


def total_calls(info: dict[str, Any], exclude: tuple[str, ...] = ("info", "client|list", "client|id", "time")) -> int:
    return sum(int(v["calls"]) for k, v in info.items() if k.removeprefix("cmdstat_") not in exclude)


async def server_seconds(probe: RedisClient) -> float:
    secs, micros = await probe.time()
    return float(secs) + micros / 1e6


@pytest.fixture
def prefix() -> str:
    return f"many{uuid.uuid4().hex[:8]}"


@pytest.mark.timeout(600)  # a hang guard: 1,000 queues start, idle, run a job each and stop; minutes on a busy machine
async def test_a_thousand_queues_idle_cheaply_with_bounded_connections(
    own_server: RedisServer, prefix: str
) -> None:
    probe = connect(own_server.url)
    app = many_queue_app(prefix, QUEUES)
    try:
        async with service_of(app, own_server.url) as service:
            hub = service.wake_hub
            await wait_for(lambda: hub.watched == QUEUES, timeout=180, what="every queue idle in the one wait")
            connections = await other_clients(probe)
            assert connections <= MAX_CONNECTIONS, connections
            assert connections <= service.settings.redis_max_connections + 1  # + the health check's own

            # Idle traffic: commands per second of server time over at least ten seconds and two
            # full rounds of the one blocking wait.
            calls_before, t_before, waits_before = total_calls(await probe.info("commandstats")), \
                await server_seconds(probe), hub.waits

            async def window_done() -> bool:
                return hub.waits >= waits_before + 2 and await server_seconds(probe) - t_before >= 10

            await wait_for(window_done, timeout=180, interval=0.2, what="an idle window")
            calls = total_calls(await probe.info("commandstats")) - calls_before
            rate = calls / (await server_seconds(probe) - t_before)
            assert rate <= MAX_IDLE_COMMANDS_PER_S, (calls, rate)
            assert await other_clients(probe) <= MAX_CONNECTIONS

            # Work arrives on every queue at once: each is picked up, the connection bound holds and
            # /health answers from its own connection, reporting Redis reachable.
            queues = [Queue(name, redis=probe, prefix=prefix) for name in service.workers]
            jobs = [await q.add("touch", None) for q in queues]
            status, body = await service.health()
            assert status == 200 and body["redis"]["ok"], body["problems"]
            for job in jobs:
                record = await job.wait(timeout=120)
                assert record.state is JobState.COMPLETED and record.result == job.queue.name
            assert await other_clients(probe) <= MAX_CONNECTIONS
            status, body = await service.health()
            assert status == 200, body["problems"]
    finally:
        await probe.aclose()


async def test_health_reports_redis_down_honestly(own_server: RedisServer, prefix: str) -> None:
    app = many_queue_app(prefix, 20)
    async with service_of(app, own_server.url, shutdown_grace_s=0.5) as service:
        await wait_for(lambda: service.wake_hub.watched == 20, timeout=60, what="queues idle")
        status, _ = await service.health()
        assert status == 200
        own_server.stop()
        status, body = await service.health()
        assert status == 503 and "redis unreachable" in body["problems"]
        own_server.start(own_server.port)
        await wait_for(lambda: service.ping(), timeout=60, what="redis back")
        status, body = await service.health()
        assert status == 200, body["problems"]
        producer = connect(own_server.url)  # a fresh client: the app's pooled ones met the restart
        try:
            job = await Queue("q0003", redis=producer, prefix=prefix).add("touch", None)
            assert (await job.wait(timeout=60)).state is JobState.COMPLETED  # picked up after the restart
        finally:
            await producer.aclose()
