"""A Worker used without the worker service restarts a loop that ended while it runs. A loop ends on
an error no fault handling foresaw: here a Redis user the operator left without the right to run
scripts (NOPERM on every trip, an error no retry can fix). The worker logs it, starts the loop again
with backoff, and works as soon as the permission is granted; before, its pump stayed dead and the
worker never claimed a job again, with nothing logged."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from conveyor import JobContext, Queue, Worker
from conveyor.redis.connection import RedisClient, connect
from conveyor.testing import RedisServer
from conveyor.worker import worker as worker_module
from tests.conftest import running, wait_for


@asynccontextmanager
async def without_scripts(server: RedisServer, qname: str) -> AsyncIterator[tuple[RedisClient, RedisClient, str]]:
    """(admin client, client of a user who may not run scripts, that user's name); the user goes after."""
    user = f"u-{qname}"
    admin = connect(server.url)
    await admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-evalsha", "-eval")
    client = connect(f"redis://{user}:pw@127.0.0.1:{server.port}/0")
    try:
        yield admin, client, user
    finally:
        await client.aclose()
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


async def test_a_loop_that_ends_is_started_again_and_the_worker_goes_on(
    redis_server: RedisServer, qname: str, caplog: pytest.LogCaptureFixture,
) -> None:
    async with without_scripts(redis_server, qname) as (admin, client, user):
        done: list[int] = []

        async def note(ctx: JobContext, data: dict[str, Any]) -> None:
            done.append(data["i"])

        worker = Worker(Queue(qname, redis=client), {"note": note}, concurrency=2, idle_block_s=1.0)
        with caplog.at_level(logging.ERROR, logger="conveyor.worker.worker"):
            async with running(worker):
                first_pump = worker.loop_tasks["pump"]
                await wait_for(first_pump.done, timeout=60, what="the pump ended on NOPERM")
                await admin.execute_command("ACL", "SETUSER", user, "+@all")
                await Queue(qname, redis=admin).add("note", {"i": 1})
                await wait_for(lambda: done == [1], timeout=90, what="the job ran once scripts were allowed")
                assert not worker.loop_tasks["pump"].done()
                assert worker.loop_restarts >= 1
                assert any("pump loop ended (NoPermissionError" in r.getMessage() for r in caplog.records)
        await Queue(qname, redis=admin).obliterate(force=True)


async def test_a_supervised_worker_leaves_restarts_to_its_supervisor(redis_server: RedisServer, qname: str) -> None:
    """Under the worker service the QueueWatch restarts loops (and counts them in metrics); the
    worker's own restarts are off, so a loop is never started twice."""
    client = connect(redis_server.url)

    async def note(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    worker = Worker(Queue(qname, redis=client), {"note": note}, concurrency=1, idle_block_s=1.0)
    worker.self_healing = False
    try:
        async with running(worker):
            sweep = worker.loop_tasks["sweep"]
            sweep.cancel()
            await wait_for(sweep.done, what="the sweep loop ended")
            worker.restart_loop("sweep")
            restarted = worker.loop_tasks["sweep"]
            assert restarted is not sweep and not restarted.done()
            worker.restart_loop("sweep")  # a second restart of a running loop changes nothing
            assert worker.loop_tasks["sweep"] is restarted and worker.loop_restarts == 0
    finally:
        await client.aclose()


@pytest.mark.timeout(400)  # over a thousand restarts on a busy machine
async def test_a_loop_that_keeps_ending_is_started_again_past_a_thousand_times(
    redis_server: RedisServer, qname: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The delay doubled as 0.5 * 2**ends before the cap: at the 1025th end in a row (8.5 hours of
    a missing permission at the 30 s cap) the float overflowed inside the restart callback, and
    the loop was never started again. A millisecond cap gets there in seconds."""
    monkeypatch.setattr(worker_module, "RESTART_MAX_S", 0.001)
    async with without_scripts(redis_server, qname) as (admin, client, user):
        done: list[int] = []

        async def note(ctx: JobContext, data: dict[str, Any]) -> None:
            done.append(data["i"])

        worker = Worker(Queue(qname, redis=client), {"note": note}, concurrency=2, idle_block_s=1.0)
        async with running(worker):
            ends = 1100 * len(worker.loop_tasks)  # more than any loop can reach if one stops at 1024
            await wait_for(lambda: worker.loop_restarts >= ends, timeout=300, what=f"{ends} restarts")
            await admin.execute_command("ACL", "SETUSER", user, "+@all")
            await Queue(qname, redis=admin).add("note", {"i": 1})
            await wait_for(lambda: done == [1], timeout=90, what="the job ran once scripts were allowed")
        await Queue(qname, redis=admin).obliterate(force=True)


async def test_a_loop_that_ends_at_once_stays_at_the_capped_delay(
    redis_server: RedisServer, qname: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Calm is counted from the restart: with a cap over the calm period, a loop that ends right after
    each restart keeps waiting the cap; before, calm was counted from its previous end, which lies a
    whole (capped) delay back, so the delay fell back to the first one every time it reached the cap.
    A 2 s cap and a 1 s calm stand for a cap over 60 s and the 60 s calm."""
    monkeypatch.setattr(worker_module, "RESTART_FIRST_S", 0.125)
    monkeypatch.setattr(worker_module, "RESTART_MAX_S", 2.0)
    monkeypatch.setattr(worker_module, "RESTART_CALM_S", 1.0)
    async with without_scripts(redis_server, qname) as (_, client, _user):

        async def note(ctx: JobContext, data: dict[str, Any]) -> None:
            return None

        def pump_delays() -> list[float]:
            return [float(r.args[3]) for r in caplog.records  # type: ignore[index]
                    if r.name == "conveyor.worker.worker" and isinstance(r.args, tuple) and len(r.args) == 4
                    and r.args[1] == "pump"]

        worker = Worker(Queue(qname, redis=client), {"note": note}, concurrency=1, idle_block_s=1.0)
        with caplog.at_level(logging.ERROR, logger="conveyor.worker.worker"):
            async with running(worker):
                await wait_for(lambda: len(pump_delays()) >= 8, timeout=120, what="8 ends of the pump")
        delays = pump_delays()
        assert delays[:5] == [0.125, 0.25, 0.5, 1.0, 2.0], delays
        assert all(d == 2.0 for d in delays[5:]), delays
