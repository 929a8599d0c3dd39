"""WorkerService from code: pause/resume via the paused flag, loop supervision, registry, job logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs

from conveyor import JobContext, JobOutcome, JobState, OutcomeKind, Queue
from conveyor.partitions import PartitionedQueue
from conveyor.redis.connection import RedisClient, connect
from conveyor.redis.keys import WorkerRegistryKeys
from conveyor.schedules import MAINTENANCE_ID, ScheduleStore
from conveyor.service import WorkerService, list_workers, plan_queues
from conveyor.service import watch as watch_module
from conveyor.service.joblog import JobLogMiddleware, mask_secrets
from conveyor.service.registry import RegistryWriter
from conveyor.settings import Settings
from conveyor.testing import RedisServer
from tests.conftest import counts_of, wait_for
from tests.service.apps import build_app

FAST = dict(
    metrics_interval_s=0.1, heartbeat_s=0.5, stats_interval_s=0, restart_backoff_max_s=1.0, lease_ms=5000
)


@asynccontextmanager
async def running_service(url: str, prefix: str, **settings: Any) -> AsyncIterator[WorkerService]:
    app = build_app(prefix)
    app.use_redis(url)
    service = WorkerService(app, Settings(**{**FAST, **settings}), plan_queues(app, None, {}))
    task = asyncio.create_task(service.run())
    await wait_for(lambda: service.state == "running", timeout=20, what="service running")
    try:
        yield service
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)


async def admin_user(server: RedisServer) -> RedisClient:
    """A client of a second user with every right, so the test can take rights from `default` (the
    service's user) and give them back."""
    setup = connect(server.url)
    await setup.execute_command("ACL", "SETUSER", "admin", "on", ">pw", "~*", "&*", "+@all")
    await setup.aclose()
    return connect(f"redis://admin:pw@127.0.0.1:{server.port}/0")


async def test_pause_and_resume_from_code_use_the_queue_paused_flag(
    redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    fast = Queue("fast", redis=plain_client, prefix=prefix)
    slow = Queue("slow.io", redis=plain_client, prefix=prefix)
    async with running_service(redis_url, prefix) as service:
        await service.pause(["fast"])
        assert await fast.is_paused() and not await slow.is_paused()  # in Redis: every process sees it
        paused_job = await fast.add("track", {})
        other = await slow.add("track", {})
        await other.wait(timeout=20)
        assert await paused_job.state() is JobState.WAITING
        await wait_for(lambda: service.paused["fast"], timeout=10, what="paused flag sampled")
        status, body = await service.health()
        assert status == 200 and body["queues"]["fast"]["paused"] is True
        assert body["queues"]["slow.io"]["paused"] is False
        await service.resume()
        assert not await fast.is_paused()
        record = await paused_job.wait(timeout=20)
        assert record.state is JobState.COMPLETED


async def test_a_crashed_queue_loop_is_restarted_with_backoff_and_reported(
    own_server: RedisServer, prefix: str
) -> None:
    admin = await admin_user(own_server)
    fast = Queue("fast", redis=admin, prefix=prefix)
    try:
        async with running_service(own_server.url, prefix) as service:
            await (await fast.add("track", {})).wait(timeout=20)
            # An operator revokes script permissions: every script call of the service now fails
            # with NOPERM, which kills the queue loops (a connection error would only be retried).
            await admin.execute_command("ACL", "SETUSER", "default", "-evalsha", "-eval")
            job = await fast.add("track", {})

            async def reported_down() -> bool:
                status, body = await service.health()
                return status == 503 and body["queues"]["fast"]["loop"] == "down"

            await wait_for(reported_down, timeout=20, what="503 with the fast loop down")
            _, body = await service.health()
            assert "NoPermissionError" in body["queues"]["fast"]["last_error"]
            await wait_for(lambda: service.watches["fast"].restarts >= 2, timeout=20, what="restarted twice")
            assert await job.state() is JobState.WAITING
            await admin.execute_command("ACL", "SETUSER", "default", "+@all")
            assert (await job.wait(timeout=30)).state is JobState.COMPLETED
            await wait_for(lambda: service.watches["fast"].healthy, timeout=10, what="loop healthy again")
            status, body = await service.health()
            assert status == 200 and body["queues"]["fast"]["restarts"] >= 2
            text = service.metrics.render().decode()
            assert 'conveyor_queue_loop_restarts_total{loop="pump",queue="fast"}' in text
            assert 'conveyor_queue_loop_up{queue="fast"} 1.0' in text
    finally:
        await admin.aclose()


@pytest.mark.timeout(400)  # over a thousand restarts on a busy machine
async def test_a_loop_that_keeps_crashing_is_restarted_past_a_thousand_crashes(
    own_server: RedisServer, prefix: str
) -> None:
    """The watch doubled its delay as 0.5 * 2**crashes before capping it: at the 1025th crash in a row
    (8.5 hours of a revoked permission at the default 30 s cap) the float overflowed, the watch died
    with OverflowError and the queue never claimed a job again, even once the cause was fixed."""
    admin = await admin_user(own_server)
    fast = Queue("fast", redis=admin, prefix=prefix)
    try:
        async with running_service(own_server.url, prefix, restart_backoff_max_s=0.001) as service:
            watch = service.watches["fast"]
            await admin.execute_command("ACL", "SETUSER", "default", "-evalsha", "-eval")
            job = await fast.add("track", {})
            crashes = 1100 * len(watch.worker.loop_tasks)  # each restart follows a crash; 1100+ rounds at least
            await wait_for(lambda: watch.restarts >= crashes, timeout=300, what=f"{crashes} restarts")
            await admin.execute_command("ACL", "SETUSER", "default", "+@all")
            assert (await job.wait(timeout=60)).state is JobState.COMPLETED
    finally:
        await admin.aclose()


async def test_a_loop_that_crashes_at_once_stays_at_the_capped_backoff(
    own_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Calm is counted from the restart: with CONVEYOR_RESTART_BACKOFF_MAX_S over the calm period, a
    loop that crashes right after each restart keeps waiting the cap; before, calm was counted from
    the previous crash, a whole capped delay back, so the backoff fell back to 0.5 s each time it
    reached the cap. A 2 s cap and a 1 s calm stand for a cap over 60 s and the 60 s calm."""
    monkeypatch.setattr(watch_module, "FIRST_DELAY_S", 0.125)
    monkeypatch.setattr(watch_module, "CALM_AFTER_S", 1.0)
    admin = await admin_user(own_server)

    def delays() -> list[float]:
        """The delay before each restart of the fast queue's pump (each loop has its own backoff)."""
        return [float(r.args[3]) for r in caplog.records  # type: ignore[index]
                if r.name == "conveyor.service.watch" and isinstance(r.args, tuple) and len(r.args) == 4
                and r.args[0] == "fast" and r.args[1] == "pump"]

    def runs() -> list[float]:
        got = delays()
        return [d for i, d in enumerate(got) if i == 0 or got[i - 1] != d]

    try:
        with caplog.at_level(logging.WARNING, logger="conveyor.service.watch"):
            async with running_service(own_server.url, prefix, restart_backoff_max_s=2.0) as service:
                watch = service.watches["fast"]
                await admin.execute_command("ACL", "SETUSER", "default", "-evalsha", "-eval")
                await Queue("fast", redis=admin, prefix=prefix).add("track", {})
                await wait_for(lambda: len(runs()) > 5 or delays().count(2.0) >= 3, timeout=120,
                               what="three restarts at the cap (or a fall back from it)")
                await admin.execute_command("ACL", "SETUSER", "default", "+@all")
                assert watch.restarts >= 3
        assert runs() == [0.125, 0.25, 0.5, 1.0, 2.0], delays()
    finally:
        await admin.aclose()


async def test_each_loop_of_a_queue_has_its_own_restart_backoff(
    own_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With scripts refused, the pump crashes at once after each restart while the queue's other
    loops crash at their own pace: each loop's delays start at the first delay and double up to the
    cap, and the pump stays at the cap. Before, the loops shared one streak: a loop crashing for the
    first time waited the pump's grown delay, and one crashing more than the calm period after the
    pump's restart sent every loop back to the first delay. A 2 s cap and a 5 s calm stand for the
    defaults."""
    monkeypatch.setattr(watch_module, "FIRST_DELAY_S", 0.125)
    monkeypatch.setattr(watch_module, "CALM_AFTER_S", 5.0)
    admin = await admin_user(own_server)

    def delays() -> dict[str, list[float]]:
        """Each loop's delays before its restarts, in order."""
        found: dict[str, list[float]] = {}
        for r in caplog.records:
            if (r.name == "conveyor.service.watch" and isinstance(r.args, tuple) and len(r.args) == 4
                    and r.args[0] == "fast"):
                found.setdefault(str(r.args[1]), []).append(float(r.args[3]))  # type: ignore[arg-type]
        return found

    def enough() -> bool:
        got = delays()
        return got.get("pump", []).count(2.0) >= 3 and len(got) >= 2

    try:
        with caplog.at_level(logging.WARNING, logger="conveyor.service.watch"):
            async with running_service(own_server.url, prefix, restart_backoff_max_s=2.0,
                                       stalled_interval_ms=300) as service:
                await admin.execute_command("ACL", "SETUSER", "default", "-evalsha", "-eval")
                await Queue("fast", redis=admin, prefix=prefix).add("track", {})
                await wait_for(enough, timeout=120, what="the pump at the cap three times, another loop restarted")
                await admin.execute_command("ACL", "SETUSER", "default", "+@all")
                assert service.watches["fast"].restarts >= 4
        got = delays()
        pump = got.pop("pump")
        assert pump[:5] == [0.125, 0.25, 0.5, 1.0, 2.0] and set(pump[5:]) == {2.0}, pump
        for loop, seen in got.items():
            assert seen[0] == 0.125, (loop, seen)  # its own first crash
    finally:
        await admin.aclose()


async def test_jobs_a_producer_put_in_partitions_this_worker_does_not_serve_are_reported(
    redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    """A producer that declares `fast` with 3 partitions, a worker that declares it plain: the
    producer's jobs waited forever in partitions no worker reads, and nothing said so."""
    producer = PartitionedQueue("fast", partitions=3, redis=plain_client, prefix=prefix)
    stranded = [await producer.add("track", {}) for _ in range(2)]
    plain = await Queue("fast", redis=plain_client, prefix=prefix).add("track", {})
    with capture_logs() as logs:
        async with running_service(redis_url, prefix):
            assert (await plain.wait(timeout=30)).state is JobState.COMPLETED
    warnings = [e for e in logs if e["event"].startswith("jobs wait in partitions this worker does not serve")]
    assert warnings == [{
        "event": "jobs wait in partitions this worker does not serve; declare previous_partitions to serve them",
        "queue": "fast", "jobs": 2, "layout": "the 3-partition layout", "log_level": "warning",
    }]
    assert [await j.state() for j in stranded] == [JobState.WAITING, JobState.WAITING]


async def test_registry_lists_live_workers_and_prunes_expired_ones(client: RedisClient, prefix: str) -> None:
    """Against a standalone server and a Cluster (all registry keys share the `{workers}` slot)."""
    plain_client = client
    keys = WorkerRegistryKeys(prefix)
    short = RegistryWriter(plain_client, prefix, "w-short", lambda: {"id": "w-short", "queues": ["a"]}, 0.1)
    long = RegistryWriter(plain_client, prefix, "w-long", lambda: {"id": "w-long", "queues": ["b"]}, 30)
    await short.beat()
    await long.beat()
    listed = await list_workers(plain_client, prefix)
    assert [w["id"] for w in listed] == ["w-long", "w-short"]
    assert listed[1]["queues"] == ["a"] and listed[1]["last_beat_ms"] > 0
    assert 0 < await plain_client.pttl(keys.worker("w-short")) <= 300

    async def only_long() -> bool:
        return [w["id"] for w in await list_workers(plain_client, prefix)] == ["w-long"]

    await wait_for(only_long, timeout=10, what="short-lived record expired")
    assert await plain_client.zrange(keys.index, 0, -1) == ["w-long"]
    await long.remove()
    assert await list_workers(plain_client, prefix) == []
    assert await plain_client.exists(keys.index) == 0


async def test_job_log_lines_carry_the_error_but_no_payload_or_secret() -> None:
    ctx = JobContext(None, "q", "w", "7", "tok", 2, "charge", {"card": "4111"}, {})  # type: ignore[arg-type]
    message = "POST https://shop:hunter2@pay.example/charge refused (Authorization: Bearer tok.en-42)"
    outcome = JobOutcome(
        OutcomeKind.FAILED, duration_s=0.25,
        error={"type": "ValueError", "message": message, "stack": f"Traceback ...\nValueError: {message}\n"},
    )
    with capture_logs() as logs:
        await JobLogMiddleware().before_job(ctx)
        await JobLogMiddleware().after_job(ctx, outcome)
    start, end = logs
    assert start == {
        "event": "job started",
        "queue": "q",
        "job_id": "7",
        "job": "charge",
        "attempt": 2,
        "log_level": "info",
    }
    assert end["outcome"] == "failed" and end["duration_s"] == 0.25 and end["error_type"] == "ValueError"
    assert end["log_level"] == "warning"
    assert end["error"] == "POST https://shop:***@pay.example/charge refused (Authorization: Bearer ***)"
    assert end["traceback"].startswith("Traceback") and "pay.example" in end["traceback"]
    for secret in ("4111", "hunter2", "tok.en-42"):
        assert secret not in repr(end)


@pytest.mark.parametrize(("text", "masked"), [
    ("redis://:pw@10.0.0.1:7001/0 down", "redis://:***@10.0.0.1:7001/0 down"),
    ("key cvk_0123456789abcdef_" + "a" * 64 + " revoked", "key cvk_0123456789abcdef_*** revoked"),
    ("openai said 401 for sk-proj-abcdefgh1234", "openai said 401 for sk-***"),
    ("login failed: password=s3cr3t&user=x", "login failed: password=***&user=x"),
    ('{"api_key": "xyz"} rejected', '{"api_key": "***"} rejected'),
    ("plain message, nothing to hide", "plain message, nothing to hide"),
])
def test_secrets_in_error_texts_are_masked(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


async def test_stop_hands_back_jobs_after_the_grace(
    redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    fast = Queue("fast", redis=plain_client, prefix=prefix)
    async with running_service(redis_url, prefix, shutdown_grace_s=0.2) as service:
        job = await fast.add("track", {"sleep": 60})
        await wait_for(lambda: service.workers["fast"].active == 1, timeout=20, what="job running")
    assert await job.state() is JobState.WAITING
    assert service.summary()["returned"] == 1
    assert (await counts_of(fast))["active"] == 0


async def test_service_waits_for_redis_at_start_and_reports_it(prefix: str) -> None:
    from conveyor.testing import free_port

    app = build_app(prefix)
    app.use_redis(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    service = WorkerService(app, Settings(**FAST), plan_queues(app, None, {}))
    task = asyncio.create_task(service.run())
    await wait_for(lambda: service.state == "starting", timeout=30, what="starting")
    status, body = await service.health()
    assert status == 503 and body["status"] == "starting"
    assert "redis unreachable" in body["problems"] and body["redis"]["ok"] is False
    service.request_stop()
    summary = await asyncio.wait_for(task, 20)
    assert summary["processed"] == 0 and service.state == "stopped"


@pytest.mark.parametrize(("env", "ends"), [({"CONVEYOR_MAX_STALLS": "0"}, JobState.FAILED), ({}, JobState.COMPLETED)])
async def test_max_stalls_is_a_setting_of_the_service(
    redis_url: str, prefix: str, plain_client: RedisClient, env: dict[str, str], ends: JobState
) -> None:
    """A job whose confirmed run lapsed once (its worker froze or died while running it): with
    CONVEYOR_MAX_STALLS=0 the service's sweep fails it as stalled; with the default (1) it runs again."""
    fast = Queue("fast", redis=plain_client, prefix=prefix)
    job = await fast.add("track", {})
    claimed = await fast.scripts.claim("a-worker-that-froze", 200, 1)
    assert claimed[1] == job.id
    assert await fast.scripts.extend(200, [(job.id, str(claimed[2]), True)]) == [0]  # its run confirmed
    await wait_for(lambda: _lease_expired(plain_client, fast), timeout=20, what="the lease expired")
    app = build_app(prefix)
    app.use_redis(redis_url)
    settings = Settings.from_env(env, **{**FAST, "stalled_interval_ms": 100})
    service = WorkerService(app, settings, plan_queues(app, None, {}))
    task = asyncio.create_task(service.run())
    try:
        record = await job.wait(timeout=30)
        assert record.state is ends
        if ends is JobState.FAILED:
            assert record.error is not None and record.error["type"] == "Stalled"
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)


async def _lease_expired(client: RedisClient, queue: Queue) -> bool:
    sec, usec = await client.time()
    now_ms = int(sec) * 1000 + int(usec) // 1000
    return bool(await client.zrangebyscore(queue.keys.active, "-inf", now_ms))


async def test_the_service_scheduler_without_maintenance_removes_the_stored_schedule(
    redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    """CONVEYOR_MAINTENANCE=false is `--no-maintenance` for the scheduler inside `conveyor worker`: a
    deployment that turned maintenance off would otherwise get it back whenever a worker started."""
    store = ScheduleStore(plain_client, prefix)
    async with running_service(redis_url, prefix):
        await wait_for(lambda: _stored(store), timeout=30, what="the maintenance schedule stored")
    async with running_service(redis_url, prefix, maintenance=False):
        assert await store.find(MAINTENANCE_ID) is None
        stored_ids = {s.id for s in await store.list()}
        assert "conveyor-alerts" in stored_ids  # the scheduler still runs, with its other built-ins


async def _stored(store: ScheduleStore) -> bool:
    return await store.find(MAINTENANCE_ID) is not None
