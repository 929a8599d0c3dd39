"""Every operator command against a server named by REDIS_URL (each test on its own key prefix, so
`--all` and `status` see only its queues): output, --json fields, one-line errors, exit codes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from typing import Any

import pytest

from conveyor import JobContext, Queue, Worker, __version__
from conveyor.redis.connection import RedisClient
from conveyor.service.registry import RegistryWriter
from conveyor.testing import RedisClusterServers, RedisServer
from tests.cli.run import as_json, clean_env, conveyor, error_line, ok
from tests.conftest import wait_for
from tests.embedded.test_sentinel import sentinel  # noqa: F401  (the fixture: a real Sentinel)
from tests.proxy import TcpProxy


@pytest.fixture
def prefix() -> str:
    return f"cli{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(plain_client: RedisClient) -> RedisClient:
    return plain_client


async def cli(*args: str, url: str, prefix: str) -> Any:
    return await asyncio.to_thread(as_json, *args, "--prefix", prefix, redis_url=url)


async def text(*args: str, url: str, prefix: str) -> str:
    return await asyncio.to_thread(ok, *args, "--prefix", prefix, redis_url=url)


async def error(*args: str, url: str, prefix: str) -> str:
    return await asyncio.to_thread(error_line, *args, "--prefix", prefix, redis_url=url)


async def boom(ctx: JobContext, data: Any) -> None:
    raise RuntimeError(f"boom {data}")


async def test_enqueue_with_options_then_read_back(redis_url: str, prefix: str, client: RedisClient) -> None:
    made = await cli("enqueue", "mail", "send", "--data", '{"to": "ada"}', "--priority", "7", "--attempts", "4",
                     "--job-id", "welcome-ada", "--timeout", "30", url=redis_url, prefix=prefix)
    assert made == {"id": "welcome-ada", "queue": "mail", "state": "waiting", "created": True}
    again = await cli("enqueue", "mail", "send", "--data", '{"to": "ada"}', "--job-id", "welcome-ada",
                      url=redis_url, prefix=prefix)
    assert again["created"] is False
    record = await Queue("mail", redis=client, prefix=prefix).get_job("welcome-ada")
    assert record is not None and (record.priority, record.max_attempts, record.data) == (7, 4, {"to": "ada"})
    later = await cli("enqueue", "mail", "send", "--run-at", "2099-01-01T00:00:00+00:00", url=redis_url,
                      prefix=prefix)
    assert later["state"] == "delayed"
    assert "enqueued job" in await text("enqueue", "mail", "send", url=redis_url, prefix=prefix)

    assert "--data is not valid JSON" in await error("enqueue", "mail", "send", "--data", "{nope",
                                                     url=redis_url, prefix=prefix)
    assert "priority" in await error("enqueue", "mail", "send", "--priority", "5000", url=redis_url, prefix=prefix)
    assert "--run-at" in await error("enqueue", "mail", "send", "--run-at", "tomorrow", url=redis_url,
                                     prefix=prefix)
    assert "already exists with different name or data" in await error(
        "enqueue", "mail", "send", "--data", '{"to": "bob"}', "--job-id", "welcome-ada", url=redis_url, prefix=prefix)


@pytest.mark.parametrize(("args", "flag"), [
    (("--priority", "5000"), "--priority: priority must be"),
    (("--delay", "-1"), "--delay: delay must be"),
    (("--delay", "5", "--run-at", "2099-01-01T00:00:00+00:00"), "--delay: give either delay or run_at"),
    (("--attempts", "0"), "--attempts: attempts must be"),
    (("--timeout", "0"), "--timeout: timeout must be"),
    (("--cost", "-3"), "--cost: cost must be"),
    (("--job-id", "12345"), "--job-id: job id '12345' is all digits"),
    (("--idempotency-key", "a b"), "--idempotency-key: invalid idempotency key"),
])
async def test_enqueue_with_an_option_the_engine_refuses_exits_2_naming_the_option(
    redis_url: str, prefix: str, client: RedisClient, args: tuple[str, ...], flag: str,
) -> None:
    """A bad argument exits with status 2 (docs/cli.md) in one line that names the flag, and nothing
    is written; before, the engine's refusal left through the generic error path with status 1."""
    done = await asyncio.to_thread(conveyor, "enqueue", "mail", "send", *args, "--prefix", prefix,
                                   redis_url=redis_url)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}"), done.stderr
    assert sum((await Queue("mail", redis=client, prefix=prefix).counts()).values()) == 0


async def test_failed_jobs_are_listed_shown_and_retried(redis_url: str, prefix: str, client: RedisClient) -> None:
    queue = Queue("billing", redis=client, prefix=prefix)
    worker = Worker(queue, {"charge": boom}, concurrency=4)
    await worker.start()
    try:
        jobs = [await queue.add("charge", i) for i in range(3)]
        await wait_for(lambda: _count(queue, "failed", 3), timeout=30, what="three failed jobs")
    finally:
        await worker.close()
    page = await cli("jobs", "billing", "--state", "failed", "--limit", "2", url=redis_url, prefix=prefix)
    assert len(page["jobs"]) == 2 and page["next_cursor"] == 2
    rest = await cli("jobs", "billing", "--state", "failed", "--cursor", "2", url=redis_url, prefix=prefix)
    assert len(rest["jobs"]) == 1 and rest["next_cursor"] is None
    listing = await text("jobs", "billing", "--state", "failed", url=redis_url, prefix=prefix)
    assert "RuntimeError: boom" in listing and listing.splitlines()[0].split() == [
        "ID", "NAME", "STATE", "ATTEMPTS", "AGE", "ERROR"]
    shown = await text("job", "billing", jobs[0].id, url=redis_url, prefix=prefix)
    assert "RuntimeError: boom 0 (attempt 1)" in shown and "Traceback (most recent call last)" in shown

    one = await cli("retry", "billing", jobs[0].id, url=redis_url, prefix=prefix)
    assert one == {"id": jobs[0].id, "queue": "billing", "state": "waiting"}
    # Sent again (its reply lost): the job is where the retry put it, so it succeeds the same way.
    assert await cli("retry", "billing", jobs[0].id, url=redis_url, prefix=prefix) == one
    assert "was already waiting" in await text("retry", "billing", jobs[0].id, url=redis_url, prefix=prefix)
    rest_retried = await cli("retry", "billing", "--all-failed", url=redis_url, prefix=prefix)
    assert rest_retried == {"queue": "billing", "retried": 2, "remaining": 0}
    assert (await queue.counts())["waiting"] == 3
    assert "either a job id or --all-failed" in await error("retry", "billing", url=redis_url, prefix=prefix)


async def _count(queue: Queue, state: str, n: int) -> bool:
    return {str(k): v for k, v in (await queue.counts()).items()}[state] == n


async def test_cancel_promote_remove_and_purge(redis_url: str, prefix: str, client: RedisClient) -> None:
    queue = Queue("media", redis=client, prefix=prefix)
    delayed = [await queue.add("resize", i, delay=3600) for i in range(4)]
    assert (await cli("promote", "media", delayed[0].id, url=redis_url, prefix=prefix))["state"] == "waiting"
    assert (await cli("cancel", "media", delayed[1].id, url=redis_url, prefix=prefix))["state"] == "cancelled"
    assert (await cli("cancel", "media", delayed[1].id, url=redis_url, prefix=prefix))["state"] == "cancelled"
    assert "already cancelled" in await text("cancel", "media", delayed[1].id, url=redis_url, prefix=prefix)
    assert "cannot retry" in await error("retry", "media", delayed[2].id, url=redis_url, prefix=prefix)  # delayed
    assert "removed" in await text("remove", "media", delayed[1].id, url=redis_url, prefix=prefix)
    assert "not found" in await error("remove", "media", delayed[1].id, url=redis_url, prefix=prefix)
    assert "cannot promote" in await error("promote", "media", delayed[0].id, url=redis_url, prefix=prefix)

    confirmed = await asyncio.to_thread(conveyor, "purge", "media", "delayed", "--prefix", prefix,
                                        redis_url=redis_url, stdin="y\n")
    assert confirmed.returncode == 0 and "deleted 2 delayed job(s) of media" in confirmed.stdout
    purged = await cli("purge", "media", "waiting", "--yes", url=redis_url, prefix=prefix)
    assert purged == {"queue": "media", "state": "waiting", "purged": 1}
    assert "cannot purge 'active'" in await error("purge", "media", "active", "--yes", url=redis_url, prefix=prefix)
    # Listed as allowed, it asked for confirmation and then failed with the engine's refusal (status 1),
    # or said there was nothing to delete: it is refused at once, like active jobs.
    for extra in ([], ["--yes"]):
        refused = await asyncio.to_thread(conveyor, "purge", "media", "waiting-children", *extra, "--prefix", prefix,
                                          redis_url=redis_url, stdin="y\n")
        assert refused.returncode == 2 and refused.stdout == "", refused
        assert refused.stderr == ("error: cannot purge 'waiting-children' jobs: use one of waiting, delayed, "
                                  "completed, failed, cancelled (cancel active jobs first)\n")
    assert {str(k): v for k, v in (await queue.counts()).items()} == dict.fromkeys(
        ["waiting", "delayed", "active", "completed", "failed", "cancelled", "waiting-children"], 0)
    assert "queue 'nope' not found" in await error("jobs", "nope", url=redis_url, prefix=prefix)
    assert "unknown state 'done'" in await error("jobs", "media", "--state", "done", url=redis_url, prefix=prefix)
    far = await asyncio.to_thread(conveyor, "jobs", "media", "--cursor", str(10**23), "--prefix", prefix,
                                  redis_url=redis_url)
    assert far.returncode == 2 and "--cursor" in far.stderr and "Redis" not in far.stderr, far.stderr


async def test_pause_resume_and_queues_with_oldest_waiting(redis_url: str, prefix: str, client: RedisClient) -> None:
    for name in ("a", "b"):
        await Queue(name, redis=client, prefix=prefix).add("x", None)
    assert (await cli("pause", "--all", url=redis_url, prefix=prefix)) == {
        "queues": [{"name": "a", "paused": True}, {"name": "b", "paused": True}]}
    assert await Queue("b", redis=client, prefix=prefix).is_paused()
    assert "resumed 2 queue(s): a, b" in await text("resume", "--all", url=redis_url, prefix=prefix)
    assert (await cli("pause", "a", url=redis_url, prefix=prefix)) == {"name": "a", "paused": True}
    found = {q["name"]: q for q in (await cli("queues", url=redis_url, prefix=prefix))["queues"]}
    assert found["a"]["paused"] and not found["b"]["paused"]
    assert found["a"]["counts"]["waiting"] == 1 and found["a"]["oldest_waiting_age_ms"] >= 0
    table = (await text("queues", url=redis_url, prefix=prefix)).splitlines()
    assert table[0].split()[:3] == ["QUEUE", "PAUSED", "WAITING"] and table[1].split()[:3] == ["a", "yes", "1"]
    assert "either a queue name or --all" in await error("pause", url=redis_url, prefix=prefix)


async def test_oldest_waiting_age_spans_priorities(redis_url: str, prefix: str, client: RedisClient) -> None:
    queue = Queue("prio", redis=client, prefix=prefix)
    old = await queue.add("x", None, priority=-5)
    await client.hset(queue.keys.job(old.id), "ts", "1000")  # enqueued long ago, behind newer urgent work
    await queue.add("x", None, priority=9)
    await queue.add("x", None, group="tenant-a")
    (view,) = (await cli("queues", url=redis_url, prefix=prefix))["queues"]
    assert view["counts"]["waiting"] == 3 and view["oldest_waiting_age_ms"] > 1_000_000_000


async def test_status_watch_refreshes_until_interrupted(redis_url: str, prefix: str, client: RedisClient) -> None:
    await Queue("w", redis=client, prefix=prefix).add("x", None)
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "conveyor", "status", "--watch", "--interval", "0.2", "--json", "--prefix", prefix],
        env=clean_env(REDIS_URL=redis_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    documents, buffer = [], ""
    while len(documents) < 2:
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line, proc.stderr.read() if proc.stderr else ""
        buffer += line
        if line == "}\n":
            documents.append(json.loads(buffer))
            buffer = ""
    proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(proc.wait, 30) == 0
    assert all(d["workers"] == [] and [q["name"] for q in d["queues"]] == ["w"] for d in documents)
    plain = await text("status", url=redis_url, prefix=prefix)
    assert "Workers (0 live)" in plain and "Queues (1)" in plain


async def test_status_watch_rides_out_redis_going_away_and_coming_back(
    redis_server: RedisServer, prefix: str, client: RedisClient
) -> None:
    """While Redis is unreachable (every connection reset and new ones refused, by a real TCP proxy)
    --watch says so on its display and keeps going; once Redis answers again it shows the status
    again, and Ctrl-C still ends it with status 0. Before, the first failed refresh ended the watch
    with one error line and status 1."""
    await Queue("w", redis=client, prefix=prefix).add("x", None)
    with TcpProxy(redis_server.port) as proxy:
        proc = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "conveyor", "status", "--watch", "--interval", "0.2", "--prefix", prefix],
            env=clean_env(REDIS_URL=proxy.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None

        async def read_until(marker: str) -> None:
            while True:
                line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)  # type: ignore[union-attr]
                assert line, f"the watch ended: {proc.wait()} {proc.stderr.read()}"  # type: ignore[union-attr]
                if marker in line:
                    return

        try:
            await read_until("Queues (1)")
            proxy.refuse(True)
            proxy.reset_all()
            await read_until(f"Redis at redis://127.0.0.1:{proxy.port}/0 is unreachable")
            await read_until("trying again every 0.2s")
            await read_until("is unreachable")  # still there, still trying
            proxy.refuse(False)
            await read_until("Queues (1)")
            proc.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_doctor_reports_problems_with_fixes(redis_url: str, prefix: str, client: RedisClient) -> None:
    skewed = {"id": "skewed-worker", "queues": [], "counts": {}}
    writer = RegistryWriter(client, prefix, "skewed-worker", lambda: skewed, interval_s=30)
    await writer.beat()
    key = f"{prefix}:{{workers}}:w:skewed-worker"
    record = json.loads(await client.get(key))
    await client.set(key, json.dumps({**record, "clock_offset_ms": 125_000.0}), px=60_000)
    done = await asyncio.to_thread(conveyor, "doctor", "--json", "--prefix", prefix, redis_url=redis_url)
    assert done.returncode == 1
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert set(checks) == {"version", "persistence", "maxmemory-policy", "hash-max-listpack-value", "latency",
                           "topology", "clock skew"}
    assert checks["persistence"]["status"] == "fail" and "appendonly yes" in checks["persistence"]["fix"]
    assert checks["clock skew"]["status"] == "fail" and "skewed-worker +125000 ms" in checks["clock skew"]["detail"]
    assert checks["maxmemory-policy"]["status"] == "ok" and checks["topology"]["status"] == "ok"
    assert checks["hash-max-listpack-value"]["status"] == ("ok" if checks["hash-max-listpack-value"]["detail"] ==
                                                          "1024" else "warn")
    plain = await asyncio.to_thread(conveyor, "doctor", "--prefix", prefix, redis_url=redis_url)
    assert plain.returncode == 1 and "FAIL  persistence" in plain.stdout and "fix: CONFIG SET appendonly yes" in \
        plain.stdout


def test_doctor_passes_a_well_configured_server_and_flags_a_bad_one() -> None:
    good = ["--appendonly", "yes", "--hash-max-listpack-value", "1024"]
    with RedisServer(extra_args=good) as server:
        report = as_json("doctor", redis_url=server.url)
        assert report["ok"] is True and all(c["status"] == "ok" for c in report["checks"]), report
    with RedisServer(extra_args=["--maxmemory-policy", "allkeys-lru", "--save", "900 1"]) as server:
        done = conveyor("doctor", "--json", redis_url=server.url)
        checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
        assert done.returncode == 1 and checks["maxmemory-policy"]["status"] == "fail"
        assert checks["persistence"]["status"] == "warn" and "RDB snapshots only" in checks["persistence"]["detail"]


def test_doctor_describes_a_cluster(cluster_servers: RedisClusterServers) -> None:
    done = conveyor("doctor", "--json", redis_url=cluster_servers.url)
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    topology = checks["topology"]
    assert topology["detail"].startswith("Cluster ok: 3 primaries, 0 replicas, 16384 slots assigned")
    assert topology["status"] == "warn" and "replica" in topology["fix"]


def test_doctor_describes_a_sentinel_deployment(sentinel: tuple[RedisServer, int]) -> None:  # noqa: F811
    primary, port = sentinel
    done = conveyor("doctor", "--json", redis_url=f"redis+sentinel://127.0.0.1:{port}/svc/0")
    topology = {c["name"]: c for c in json.loads(done.stdout)["checks"]}["topology"]
    assert topology["detail"].startswith(f"Sentinel: 1/1 sentinels answer; primary of 'svc' at 127.0.0.1:"
                                         f"{primary.port}, 0 replica(s), quorum 1"), topology
    assert topology["status"] == "warn" and "3+ sentinels" in topology["fix"]


def test_env_and_version(redis_url: str) -> None:
    assert ok("env", redis_url=redis_url) == f"export REDIS_URL={redis_url}\n"
    assert as_json("env", redis_url=redis_url) == {"REDIS_URL": redis_url, "source": "REDIS_URL", "data_dir": None}
    assert as_json("version")["version"] == __version__


def test_unreachable_server_is_one_line() -> None:
    line = error_line("status", redis_url="redis://127.0.0.1:1/0")
    assert line.startswith("error: Redis at redis://127.0.0.1:1/0 is unreachable: ")
    for args in (["keys", "list"], ["keys", "revoke", "abc"], ["schedules", "list"]):
        assert "127.0.0.1:1" in error_line(*args, redis_url="redis://127.0.0.1:1/0")


def test_an_unreachable_or_plain_server_given_as_a_cluster_is_one_line(redis_url: str) -> None:
    """A Cluster client with no node answering raises RedisClusterException, which is no RedisError:
    `queues`, `status`, `doctor`, `pause --all`, `keys` and `schedules` printed its traceback."""
    down = "redis+cluster://127.0.0.1:1"
    plain = redis_url.replace("redis://", "redis+cluster://", 1).rsplit("/", 1)[0]
    commands = (["queues"], ["status"], ["status", "--json"], ["doctor"], ["pause", "--all"], ["jobs", "q"],
                ["keys", "list"], ["schedules", "list"])
    for args in commands:
        assert error_line(*args, redis_url=down).startswith(f"error: Redis at {down} is unreachable: "), args
    for args in (["queues"], ["schedules", "list"], ["keys", "list"]):
        assert "Cluster mode is not enabled" in error_line(*args, redis_url=plain), args


@pytest.mark.parametrize(
    "args", [["status"], ["jobs", "q"], ["keys", "list"], ["keys", "create", "k", "-s", "read"], ["schedules", "list"],
             ["scheduler", "conveyor.examples:app"], ["worker", "conveyor.examples:app"],
             ["api", "conveyor.examples:app", "--port", "0"]],
)
def test_bad_urls_and_settings_are_one_line(args: list[str]) -> None:
    bad_port = error_line(*args, redis_url="redis://:secret@127.0.0.1:99999/0")
    assert "invalid Redis URL redis://:***@127.0.0.1:99999/0" in bad_port and "secret" not in bad_port
    assert "invalid Redis URL" in error_line(*args, redis_url="redis://[::1/0")
    # redis-py ignores a database that is not a number and uses 0: a typo sent jobs to another database.
    typo = error_line(*args, redis_url="redis://127.0.0.1:1/1x")
    assert typo == "error: invalid Redis URL redis://127.0.0.1:1/1x: the database must be a number, got '1x'"
    unknown = error_line(*args, redis_url="redis://127.0.0.1:1/0", CONVEYOR_TYPO="1")
    assert "unknown settings in the environment: ['CONVEYOR_TYPO']" in unknown
