"""Fixtures: real Redis servers on free ports (one standalone and one Cluster per xdist worker),
a unique queue per test, and helpers that wait on conditions instead of sleeping."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conveyor import Queue, Worker
from conveyor.embedded.state import ServerState, process_alive
from conveyor.partitions import PartitionedQueue, PartitionedWorker
from conveyor.redis.connection import RedisClient, connect
from conveyor.testing import RedisClusterServers, RedisServer

W = TypeVar("W", Worker, PartitionedWorker)  # what `running` starts and stops

CHECKOUT_STATE = Path(__file__).resolve().parents[1] / ".conveyor" / "data" / "embedded.json"
_CHECKOUT_KEY = pytest.StashKey[tuple[int, str] | None]()


def _checkout_server() -> tuple[int, str] | None:
    """(pid, run id) of an embedded server running for the checkout itself, if any."""
    state = ServerState.load(CHECKOUT_STATE)
    if state is None or not process_alive(state.pid, state.start_time):
        return None
    return state.pid, state.run_id


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without xdist)
        session.config.stash[_CHECKOUT_KEY] = _checkout_server()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite must not leave an embedded server running in the checkout (a `make up` the
    developer started before the run is theirs, and stays)."""
    if hasattr(session.config, "workerinput"):
        return
    after = _checkout_server()
    if after is not None and after != session.config.stash.get(_CHECKOUT_KEY, None):
        session.config.get_terminal_writer().line(
            f"error: the test run left an embedded server running in the checkout (pid {after[0]})", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def cluster_servers() -> Iterator[RedisClusterServers]:
    with RedisClusterServers() as cluster:
        yield cluster


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(params=["standalone", "cluster"])
def backend_url(request: pytest.FixtureRequest) -> str:
    """The behaviour suite runs against both a standalone server and a Cluster."""
    if request.param == "cluster":
        return str(request.getfixturevalue("cluster_servers").url)
    return str(request.getfixturevalue("redis_server").url)


@pytest.fixture
def qname(request: pytest.FixtureRequest) -> str:
    base = request.node.name.split("[")[0][:40].replace("_", "-")
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def client(backend_url: str) -> AsyncIterator[RedisClient]:
    c = connect(backend_url)
    yield c
    await c.aclose()


@pytest.fixture
async def plain_client(redis_url: str) -> AsyncIterator[RedisClient]:
    """A client of the standalone server only (tests that are not part of the behaviour suite)."""
    c = connect(redis_url)
    yield c
    await c.aclose()


@pytest.fixture(scope="module")
def up_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """`conveyor up` running in a fresh project directory, shared by a module's tests."""
    from tests.cli.project import UpProject

    up = UpProject(tmp_path_factory.mktemp("project"))
    try:
        yield up
    finally:
        up.stop()


BEHAVIOUR_PARTITIONS = 3
QUEUE_LAYOUTS = ("plain", "partitioned")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The behaviour suite (modules marked `behaviour`) runs each test that uses the `queue` fixture
    on a plain queue and on a partitioned one; `plain_only` keeps a test on plain queues (its reason
    names where the per-partition guarantee is tested)."""
    definition = metafunc.definition
    if ("queue_layout" in metafunc.fixturenames and definition.get_closest_marker("behaviour")
            and not definition.get_closest_marker("plain_only")):
        metafunc.parametrize("queue_layout", QUEUE_LAYOUTS, indirect=True)


@pytest.fixture
def queue_layout(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "plain"))


@pytest.fixture
async def queue(client: RedisClient, qname: str, queue_layout: str) -> AsyncIterator[Queue]:
    """A unique queue: plain, or (behaviour suite) partitioned over BEHAVIOUR_PARTITIONS partitions."""
    if queue_layout == "partitioned":
        q: Queue = PartitionedQueue(qname, partitions=BEHAVIOUR_PARTITIONS, redis=client)
    else:
        q = Queue(qname, redis=client)
    yield q
    await q.obliterate(force=True)


def one_partition(queue: Queue) -> Queue:
    """Where ordering holds: the queue itself, or one partition of a partitioned queue (priority
    and arrival order hold within a partition, not across partitions: docs/scaling.md)."""
    return queue.parts[1] if isinstance(queue, PartitionedQueue) else queue


async def wait_for(
    predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 30.0, interval: float = 0.01, what: str = ""
) -> None:
    """Poll a condition until it holds; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running(worker: W, grace_s: float = 5.0) -> AsyncIterator[W]:
    await worker.start()
    try:
        yield worker
    finally:
        await worker.close(grace_s)


async def counts_of(queue: Queue) -> dict[str, int]:
    return {str(k): v for k, v in (await queue.counts()).items()}


def job_ids(jobs: list[Any]) -> list[str]:
    return [j.id for j in jobs]


async def server_info(url: str, section: str) -> dict[str, Any]:
    """One section of the server's INFO, read on a connection of its own (a test measuring what the
    code under test made the server do: bytes sent, clients, command counts)."""
    from conveyor.redis.connection import connect

    client = connect(url)
    try:
        info: dict[str, Any] = await client.info(section)
    finally:
        await client.aclose()
    return info
