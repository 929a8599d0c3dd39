"""The service as a real subprocess (`python -m conveyor worker tests.service.apps:app`), real servers."""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis as syncredis
from redis.exceptions import BusyLoadingError

from conveyor import JobState, Queue
from conveyor.redis.connection import RedisClient, connect
from conveyor.redis.keys import WorkerRegistryKeys
from conveyor.service import list_workers
from conveyor.testing import RedisServer
from tests.conftest import counts_of, wait_for
from tests.service.apps import probe_key
from tests.service.process import ServiceProcess

Start = Callable[..., ServiceProcess]


def metric(text: str, sample: str, /, **labels: str) -> float:
    """Value of one sample in Prometheus text output (labels in any order)."""
    for line in text.splitlines():
        if not line.startswith(sample + "{") and not line.startswith(sample + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {sample}{labels} in metrics")


async def add(
    client: RedisClient,
    prefix: str,
    queue: str,
    n: int,
    options: dict[str, Any] | None = None,
    **payload: Any,
) -> list[str]:
    q = Queue(queue, redis=client, prefix=prefix)
    jobs = await q.add_bulk([{"name": "track", "data": payload, "options": options or {}} for _ in range(n)])
    return [j.id for j in jobs]


async def completed(client: RedisClient, prefix: str, queue: str) -> int:
    return (await counts_of(Queue(queue, redis=client, prefix=prefix)))["completed"]


async def started(svc: ServiceProcess) -> None:
    await wait_for(svc.healthy, timeout=30, interval=0.1, what=f"service healthy; output:\n{svc.output()}")


async def test_every_queue_runs_within_its_cap_and_reports_health_metrics_and_registry(
    services: Start, redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    svc = services(redis_url, prefix, CONVEYOR_CONCURRENCY_FAST=3)  # declared 5: the env var overrides
    await started(svc)
    await add(plain_client, prefix, "fast", 12, sleep=0.4)
    await add(plain_client, prefix, "slow.io", 6, sleep=0.4)
    await add(plain_client, prefix, "slow.io", 1, fail=True)

    async def all_done() -> bool:
        return (
            await completed(plain_client, prefix, "fast") == 12
            and await completed(plain_client, prefix, "slow.io") == 6
        )

    await wait_for(all_done, timeout=60, interval=0.1, what="all jobs completed")
    for queue, cap in (("fast", 3), ("slow.io", 2)):
        seen = [int(x) for x in await plain_client.lrange(probe_key(prefix, queue, "seen"), 0, -1)]
        assert max(seen) == cap, (queue, seen)

    async def counted() -> bool:
        return (await svc.health())[1]["queues"]["slow.io"]["failed"] == 1

    await wait_for(counted, timeout=10, what="the failed job is counted")
    status, body = await svc.health()
    assert status == 200 and body["status"] == "ok" and body["redis"]["ok"] is True
    assert body["uptime_s"] > 0
    fast, slow = body["queues"]["fast"], body["queues"]["slow.io"]
    assert (fast["processed"], fast["succeeded"], fast["failed"]) == (12, 12, 0)
    assert (fast["peak_active"], fast["concurrency"], fast["active"]) == (3, 3, 0)
    assert (slow["processed"], slow["succeeded"], slow["failed"]) == (7, 6, 1)
    assert slow["peak_active"] == 2 and slow["success_rate"] == round(6 / 7, 4)
    assert fast["last_heartbeat"] is not None and fast["loop"] == "running" and fast["restarts"] == 0

    async def depth_sampled() -> bool:
        text = await svc.metrics()
        return metric(text, "conveyor_queue_depth", queue="fast", state="completed") == 12

    await wait_for(depth_sampled, timeout=10, what="queue depth gauge sampled")
    text = await svc.metrics()
    assert metric(text, "conveyor_jobs_completed_total", queue="fast", name="track") == 12
    assert metric(text, "conveyor_jobs_failed_total", queue="slow.io", name="track") == 1
    assert metric(text, "conveyor_job_duration_seconds_count", queue="fast", name="track") == 12
    assert metric(text, "conveyor_job_duration_seconds_bucket", queue="fast", name="track", le="0.25") == 0
    assert metric(text, "conveyor_job_duration_seconds_bucket", queue="fast", name="track", le="+Inf") == 12
    assert metric(text, "conveyor_jobs_active", queue="fast") == 0
    assert metric(text, "conveyor_queue_depth", queue="slow.io", state="failed") == 1
    assert metric(text, "conveyor_redis_up") == 1
    assert metric(text, "conveyor_redis_roundtrip_seconds_count") >= 1

    workers = await list_workers(plain_client, prefix)
    assert len(workers) == 1
    record = workers[0]
    assert record["id"] == body["worker_id"] and record["pid"] == svc.pid
    assert record["queues"] == ["fast", "slow.io"] and record["concurrency"] == {"fast": 3, "slow.io": 2}
    assert record["version"] and record["started_ms"] <= record["last_beat_ms"]
    assert set(record["counts"]) == {"fast", "slow.io"} and set(record["counts"]["fast"]) >= {
        "processed",
        "succeeded",
        "failed",
        "active",
    }

    finished = [e for e in svc.events("job finished") if e["queue"] == "fast"]
    assert len(finished) == 12 and {"job_id", "job", "attempt", "duration_s", "outcome"} <= set(finished[0])
    assert "payload" not in finished[0]  # no payloads in logs unless debug
    assert svc.events("queue stats")

    svc.signal(signal.SIGTERM)
    assert await svc.wait_exit() == 0, svc.output()
    summary = svc.events("worker stopped: summary")[-1]
    assert (summary["processed"], summary["succeeded"], summary["failed"]) == (19, 18, 1)
    assert summary["peak_concurrency"] >= 3 and summary["jobs_per_min"] > 0
    assert await list_workers(plain_client, prefix) == []  # a clean stop removes the record at once


async def test_sigterm_stops_claiming_and_lets_active_jobs_finish(
    services: Start, redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    svc = services(redis_url, prefix, CONVEYOR_CONCURRENCY_FAST=3, CONVEYOR_SHUTDOWN_GRACE_S=30)
    await started(svc)
    ids = await add(plain_client, prefix, "fast", 4, sleep=1.5)
    q = Queue("fast", redis=plain_client, prefix=prefix)

    async def three_active() -> bool:
        return (await svc.health())[1]["queues"]["fast"]["active"] == 3

    await wait_for(three_active, timeout=20, what="three jobs running")
    svc.signal(signal.SIGTERM)
    assert await svc.wait_exit() == 0, svc.output()
    states = [await q.get_state(i) for i in ids]
    assert states.count(JobState.COMPLETED) == 3, states
    assert states.count(JobState.WAITING) == 1, states  # never claimed after the signal
    stopping = svc.events("worker stopping")[-1]
    assert stopping["active_jobs"] == 3
    summary = svc.events("worker stopped: summary")[-1]
    assert summary["processed"] == 3 and summary["succeeded"] == 3 and summary["success_rate"] == 1.0
    assert summary["peak_concurrency"] == 3 and summary["uptime_s"] > 0 and "jobs_per_min" in summary


async def test_job_longer_than_the_grace_is_handed_back_and_a_second_worker_completes_it(
    services: Start, redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    settings = {"CONVEYOR_SHUTDOWN_GRACE_S": 1, "CONVEYOR_LEASE_MS": 120_000}
    first = services(redis_url, prefix, **settings)
    await started(first)
    [job_id] = await add(plain_client, prefix, "fast", 1, first_sleep=120)
    q = Queue("fast", redis=plain_client, prefix=prefix)

    async def is_active() -> bool:
        return await q.get_state(job_id) is JobState.ACTIVE

    await wait_for(is_active, timeout=20, what="job active")
    first.signal(signal.SIGTERM)
    assert await first.wait_exit(within_s=20) == 0, first.output()
    assert await q.get_state(job_id) is JobState.WAITING  # back at once, not left to the 120 s lease
    assert first.events("worker stopped: summary")[-1]["returned"] == 1

    second = services(redis_url, prefix, **settings)
    record = await q.job(job_id).wait(timeout=30)
    assert record.state is JobState.COMPLETED and record.result == {"concurrent": 1, "runs": 2}
    second.signal(signal.SIGTERM)
    assert await second.wait_exit() == 0


async def test_second_signal_exits_at_once_and_the_stalled_sweep_recovers_the_job(
    services: Start, redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    settings = {"CONVEYOR_SHUTDOWN_GRACE_S": 60, "CONVEYOR_LEASE_MS": 1500}
    first = services(redis_url, prefix, **settings)
    await started(first)
    [job_id] = await add(plain_client, prefix, "fast", 1, first_sleep=120)
    q = Queue("fast", redis=plain_client, prefix=prefix)

    async def is_active() -> bool:
        return await q.get_state(job_id) is JobState.ACTIVE

    await wait_for(is_active, timeout=20, what="job active")
    # Started by this process, not only leased: a job leased after the signal is handed back unrun.
    # Its handler counted the run (the "job started" line comes before that: a second signal right
    # after it could end the process before the count, and the next run would take itself for the
    # first and sleep its 120 s).
    runs = probe_key(prefix, "fast", f"runs:{job_id}")

    async def counted() -> bool:
        return await plain_client.get(runs) is not None

    await wait_for(counted, timeout=30, what="the run counted")
    first.signal(signal.SIGTERM)
    await wait_for(lambda: bool(first.events("worker stopping")), timeout=30, what="stopping")
    first.signal(signal.SIGTERM)
    assert await first.wait_exit(within_s=30) == 130
    second = services(redis_url, prefix, **settings)
    try:
        record = await q.job(job_id).wait(timeout=90)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; first service:\n{first.output()}\nsecond service:\n{second.output()}") from None
    assert record.state is JobState.COMPLETED and record.result["runs"] == 2


async def test_health_is_503_while_redis_is_down_and_jobs_complete_after_it_returns(
    services: Start, own_server: RedisServer, prefix: str
) -> None:

    svc = services(own_server.url, prefix, CONVEYOR_METRICS_INTERVAL_S=0.2)
    await started(svc)
    own_server.stop()

    async def unhealthy() -> bool:
        status, body = await svc.health()
        return status == 503 and body["redis"]["ok"] is False and "redis unreachable" in body["problems"]

    await wait_for(unhealthy, timeout=20, interval=0.1, what="503 while Redis is down")
    assert svc.proc.poll() is None  # the service keeps running
    assert "conveyor_redis_up 0.0" in await svc.metrics()
    own_server.start(own_server.port)
    await wait_for(svc.healthy, timeout=30, interval=0.1, what="200 after Redis returned")
    client = connect(own_server.url)
    try:
        # The test handler's own Redis calls may meet a pooled connection the restart closed: retry those.
        retry = {"attempts": 3, "backoff": 0.1}
        await add(client, prefix, "fast", 5, retry)
        await add(client, prefix, "slow.io", 2, retry)

        async def done() -> bool:
            return (
                await completed(client, prefix, "fast") == 5
                and await completed(client, prefix, "slow.io") == 2
            )

        await wait_for(done, timeout=40, interval=0.1, what="jobs completed after recovery")
    finally:
        await client.aclose()
    svc.signal(signal.SIGTERM)
    assert await svc.wait_exit() == 0


async def test_registry_entry_appears_and_expires_after_sigkill(
    services: Start, redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    svc = services(redis_url, prefix, CONVEYOR_HEARTBEAT_S=0.3, CONVEYOR_QUEUES="slow.io")

    async def listed() -> bool:
        return [w["pid"] for w in await list_workers(plain_client, prefix)] == [svc.pid]

    await wait_for(listed, timeout=30, interval=0.1, what="registry entry")
    [record] = await list_workers(plain_client, prefix)
    assert record["queues"] == ["slow.io"] and record["concurrency"] == {"slow.io": 2}  # --queues subset
    ttl = await plain_client.pttl(WorkerRegistryKeys(prefix).worker(record["id"]))
    assert 0 < ttl <= 900
    svc.signal(signal.SIGKILL)
    await svc.wait_exit()

    async def gone() -> bool:
        return await list_workers(plain_client, prefix) == []

    await wait_for(gone, timeout=10, interval=0.1, what="entry expired")
    assert await plain_client.zcard(WorkerRegistryKeys(prefix).index) == 0  # pruned from the index


async def test_worker_service_runs_the_scheduler(
    services: Start, redis_url: str, prefix: str, plain_client: RedisClient
) -> None:
    """Two service processes both run the scheduler; each 0.3 s tick still makes exactly one job."""
    first = services(redis_url, prefix, TEST_SCHEDULE=1)
    second = services(redis_url, prefix, TEST_SCHEDULE=1)
    await started(first)
    await started(second)
    q = Queue("ticks", redis=plain_client, prefix=prefix)

    async def five_done() -> bool:
        return (await q.counts())[JobState.COMPLETED] >= 5

    await wait_for(five_done, timeout=30, what="scheduled ticks completed")
    first.signal(signal.SIGTERM)
    second.signal(signal.SIGTERM)
    assert await first.wait_exit() == 0 and await second.wait_exit() == 0
    records = (await q.list_jobs(JobState.COMPLETED, limit=1000)).jobs
    ids = [r.id for r in records]
    assert len(ids) == len(set(ids)) and all(i.startswith("sched:ticker:") for i in ids)
    ticks = sorted(int(i.rsplit(":", 1)[1]) for i in ids)
    assert all(b - a == 300 for a, b in itertools.pairwise(ticks)), ticks


async def test_a_redis_error_while_starting_is_retried_until_redis_is_usable(
    services: Start, prefix: str
) -> None:
    """The service starts against a server that answers PING but refuses writes (a replica not yet
    promoted): it retries its first calls instead of exiting, then runs once the server is a primary."""
    from conveyor.testing import free_port

    with RedisServer(extra_args=["--replicaof", "127.0.0.1", str(free_port())]) as replica:
        svc = services(replica.url, prefix)

        def retrying() -> bool:
            return any("read only" in e.get("error", "") for e in svc.events("redis not usable at start; retrying"))

        await wait_for(retrying, timeout=30, interval=0.1, what="a start retry")
        assert svc.proc.poll() is None, svc.output()
        status, body = await svc.health()
        assert status == 503 and "service is starting" in body["problems"]

        client = connect(replica.url)
        try:
            await client.execute_command("REPLICAOF", "NO", "ONE")
            await started(svc)
            [job_id] = await add(client, prefix, "fast", 1)
            record = await Queue("fast", redis=client, prefix=prefix).job(job_id).wait(timeout=30)
            assert record.state is JobState.COMPLETED
            assert await client.sismember(f"{prefix}:queues", "fast")  # registration was retried too
        finally:
            await client.aclose()
        svc.signal(signal.SIGTERM)
        assert await svc.wait_exit() == 0, svc.output()


LOADING_ARGS = ["--appendonly", "yes", "--aof-use-rdb-preamble", "yes", "--enable-debug-command", "local",
                "--loading-process-events-interval-bytes", "4096"]


def _fill_and_rewrite(server: RedisServer, keys: int) -> None:
    """`keys` filler keys, then an AOF rewrite: the next start replays them all from the AOF's base."""
    with syncredis.Redis(port=server.port, socket_timeout=60) as c:
        c.execute_command("DEBUG", "POPULATE", keys, "filler", 64)
        c.bgrewriteaof()
        deadline = time.monotonic() + 120
        while True:
            info = c.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                return
            assert time.monotonic() < deadline, "the AOF rewrite did not end"
            time.sleep(0.05)


def _loading(port: int) -> bool:
    """True while the server answers LOADING (it replays its AOF)."""
    try:
        with syncredis.Redis(port=port, socket_timeout=2) as c:
            c.ping()
    except BusyLoadingError:
        return True
    except (syncredis.ConnectionError, syncredis.TimeoutError):
        return False
    return False


@pytest.mark.timeout(600)  # a hang guard: the 300,000-key AOF replay takes minutes on a busy machine
async def test_loading_while_the_aof_replays_is_ridden_through(services: Start, prefix: str) -> None:
    """A server restarted with a large AOF answers LOADING for seconds while it replays: /health says
    503 then, no loop crashes, and once the data is loaded /health is 200 again and jobs run."""
    server = RedisServer(extra_args=LOADING_ARGS)
    await asyncio.to_thread(server.start)
    try:
        svc = services(server.url, prefix, CONVEYOR_METRICS_INTERVAL_S=0.2)
        await started(svc)
        client = connect(server.url)
        await add(client, prefix, "fast", 3)
        await wait_for(lambda: _at_least(client, prefix, 3), timeout=30, what="jobs before the restart")
        await client.aclose()
        await asyncio.to_thread(_fill_and_rewrite, server, 300_000)
        await asyncio.to_thread(server.stop)
        # 300,000 keys to replay, each held back 20 µs by the server's key-load-delay: a replay of
        # several seconds however fast the machine is (LOADING is answered meanwhile).
        server.extra_args += ["--key-load-delay", "20"]
        loaded = asyncio.create_task(asyncio.to_thread(server.start, server.port, 300.0))
        await wait_for(lambda: _loading(server.port), timeout=60, interval=0.02, what="the server answering LOADING")

        async def unhealthy_while_loading() -> bool:
            status, body = await svc.health()
            return status == 503 and "redis unreachable" in body["problems"] and _loading(server.port)

        await wait_for(unhealthy_while_loading, timeout=60, interval=0.05, what="503 while the AOF replays")
        await loaded  # (the server answers INFO while it still replays: that is not the end of the load)

        async def replayed() -> bool:
            return not await asyncio.to_thread(_loading, server.port)

        await wait_for(replayed, timeout=300, interval=0.2, what="the AOF replay to end")
        await wait_for(svc.healthy, timeout=60, interval=0.1, what=f"200 once loaded; output:\n{svc.output()}")
        client = connect(server.url)
        try:
            before = await completed(client, prefix, "fast")
            await add(client, prefix, "fast", 5)
            try:
                await wait_for(lambda: _at_least(client, prefix, before + 5), timeout=120, what="jobs after the load")
            except AssertionError as exc:
                logs = f"service output:\n{svc.output()}\nserver log:\n{server.log_tail(40)}"
                raise AssertionError(f"{exc}; {logs}") from None
            assert await client.dbsize() >= 300_000, "the data was replayed"
        finally:
            await client.aclose()
        assert svc.proc.poll() is None, "the service kept running"
        assert not [line for line in svc.lines if "loop crashed" in line], "no loop crashed"
        svc.signal(signal.SIGTERM)
        assert await svc.wait_exit() == 0
    finally:
        await asyncio.to_thread(server.close)


async def _at_least(client: RedisClient, prefix: str, n: int) -> bool:
    return await completed(client, prefix, "fast") >= n
