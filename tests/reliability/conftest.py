"""Fixtures for the reliability suite: a TCP proxy in front of the session's server, and queues
whose client goes through it (faults hit the worker) next to a direct one (the test's own view)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from conveyor import Queue
from conveyor.redis.connection import connect
from conveyor.testing import RedisServer
from tests.proxy import TcpProxy


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[TcpProxy]:
    with TcpProxy(redis_server.port) as p:
        yield p


@pytest.fixture
async def direct(redis_server: RedisServer, qname: str) -> AsyncIterator[Queue]:
    """The test's queue on a direct connection (never faulted)."""
    q = Queue(qname, redis=connect(redis_server.url))
    yield q
    await q.obliterate(force=True)
    await q.client.aclose()


@pytest.fixture
async def proxied(proxy: TcpProxy, qname: str) -> AsyncIterator[Queue]:
    """The same queue through the proxy (the worker's view)."""
    q = Queue(qname, redis=connect(proxy.url))
    yield q
    await q.client.aclose()
