"""Real scheduler processes (`conveyor scheduler APP`): three firing a 100 ms schedule yield exactly
one job per tick on the grid, none skipped and none created twice, for 100+ ticks; one started
before its Redis waits for it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Queue
from conveyor.redis.connection import RedisClient, connect
from conveyor.schedules import ScheduleStore, job_id_tick
from conveyor.testing import RedisServer, free_port
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
TICKS = 100
INTERVAL_MS = 100


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


async def test_three_processes_fire_exactly_one_job_per_tick(
    redis_url: str, prefix: str, qname: str, spawn: list[subprocess.Popen[bytes]]
) -> None:
    env = {**os.environ, "FLEET_QUEUE": qname, "FLEET_PREFIX": prefix, "REDIS_URL": redis_url}
    env.pop("CONVEYOR_PREFIX", None)
    cmd = [sys.executable, "-c", "from conveyor.cli import main; main()", "scheduler",
           "tests.schedules.fleet_app:app", "--no-maintenance"]
    for _ in range(3):
        spawn.append(subprocess.Popen(  # noqa: ASYNC220 - starting them is instant
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        ))
    client: RedisClient = connect(redis_url)
    q = Queue(qname, redis=client, prefix=prefix)
    try:
        async def enough() -> bool:
            assert all(p.poll() is None for p in spawn), "a scheduler process exited"
            return int(await client.zcard(q.keys.ready)) >= TICKS + 5

        await wait_for(enough, timeout=40, interval=0.1, what=f"{TICKS} ticks of jobs")
        for p in spawn:
            p.send_signal(signal.SIGTERM)
        for p in spawn:
            assert p.wait(15) == 0, (p.stderr.read() if p.stderr else b"").decode()[-2000:]

        info = await ScheduleStore(client, prefix).get("fleet")
        ids = await client.zrange(q.keys.ready, 0, -1)
        ticks = sorted(t for t in (job_id_tick(i) for i in ids) if t is not None)
        assert len(ticks) == len(ids)  # only tick jobs
        # The ticks form the schedule's grid from its anchor, with no gap and no extra.
        expected = [info.anchor_ms + i * INTERVAL_MS for i in range(len(ticks))]
        assert ticks == expected
        assert len(ticks) >= TICKS
        # Each job was created exactly once (a duplicate creation would add a second 'added' event).
        events = await client.xrange(q.keys.events, count=100_000)
        added = [fields["id"] for _, fields in events if fields.get("ev") == "added"]
        assert sorted(added) == sorted(ids)
    finally:
        await q.obliterate(force=True)
        await client.aclose()


async def test_a_scheduler_started_before_redis_waits_for_it(
    tmp_path: Path, prefix: str, qname: str, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """Like the worker service, `conveyor scheduler` started while Redis is down retries instead of
    exiting, then syncs its schedules and fires them once the server is up."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = {**os.environ, "FLEET_QUEUE": qname, "FLEET_PREFIX": prefix, "REDIS_URL": url}
    env.pop("CONVEYOR_PREFIX", None)
    log = tmp_path / "scheduler.log"
    with log.open("wb") as err:
        spawn.append(subprocess.Popen(  # noqa: ASYNC220 - starting it is instant
            [sys.executable, "-c", "from conveyor.cli import main; main()", "scheduler",
             "tests.schedules.fleet_app:app", "--no-maintenance"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
        ))
    proc = spawn[0]

    def said(text: str) -> bool:
        assert proc.poll() is None, f"the scheduler exited: {log.read_text()[-2000:]}"
        return text in log.read_text()

    await wait_for(lambda: said("retrying"), timeout=60, interval=0.1, what="a retry while Redis is down")
    server = RedisServer().start(port=port)
    try:
        await wait_for(lambda: said("scheduler running"), timeout=60, interval=0.1, what="the scheduler running")
        client: RedisClient = connect(url)
        try:
            q = Queue(qname, redis=client, prefix=prefix)
            assert (await ScheduleStore(client, prefix).get("fleet")) is not None

            async def fired() -> bool:
                return int(await client.zcard(q.keys.ready)) >= 3

            await wait_for(fired, timeout=60, interval=0.1, what="ticks fired once Redis is up")
        finally:
            await client.aclose()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    finally:
        server.stop()
