"""Fixtures: real Redis servers on free ports (one standalone and one Cluster per xdist worker),
a unique queue per test, and helpers that wait on conditions instead of sleeping."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from conveyor import Queue, Worker
from conveyor.redis.connection import RedisClient, connect
from conveyor.testing import RedisClusterServers, RedisServer


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
async def queue(client: RedisClient, qname: str) -> AsyncIterator[Queue]:
    q = Queue(qname, redis=client)
    yield q
    await q.obliterate(force=True)


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
async def running(worker: Worker, grace_s: float = 5.0) -> AsyncIterator[Worker]:
    await worker.start()
    try:
        yield worker
    finally:
        await worker.close(grace_s)


async def counts_of(queue: Queue) -> dict[str, int]:
    return {str(k): v for k, v in (await queue.counts()).items()}


def job_ids(jobs: list[Any]) -> list[str]:
    return [j.id for j in jobs]
