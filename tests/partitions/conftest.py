"""Shared by the partition tests: a queue of PARTS partitions, obliterated after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor.partitions import PartitionedQueue
from conveyor.redis.connection import RedisClient

PARTS = 3


@pytest.fixture
async def pq(client: RedisClient, qname: str) -> AsyncIterator[PartitionedQueue]:
    q = PartitionedQueue(qname, partitions=PARTS, redis=client)
    yield q
    await q.obliterate(force=True)
