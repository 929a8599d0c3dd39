"""Schedule test helpers: a unique key prefix per test (schedules are per prefix) and a clock the
test moves by hand."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from conveyor.redis.connection import RedisClient, connect
from conveyor.schedules import ScheduleStore

T0 = 1_800_000_000_000  # a fixed epoch ms for clock-driven tests


class FakeClock:
    """An async clock (epoch ms) that only moves when the test says so."""

    def __init__(self, now_ms: int = T0) -> None:
        self.now_ms = now_ms

    async def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(client: RedisClient, prefix: str) -> AsyncIterator[ScheduleStore]:
    yield ScheduleStore(client, prefix)


@pytest.fixture
async def plain(redis_url: str) -> AsyncIterator[RedisClient]:
    """A client of the test's server without the schedules' wrappers."""
    c = connect(redis_url)
    yield c
    await c.aclose()
