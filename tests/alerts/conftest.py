"""Alert test fixtures: a key prefix per test and the real local receivers (HTTP and SMTP)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from conveyor.redis.connection import RedisClient, connect
from tests.handlers.servers import Receiver, SmtpServer

SECRET = "whsec_alerts_test"


@pytest.fixture
def prefix() -> str:
    return f"al{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def rclient(redis_url: str) -> AsyncIterator[RedisClient]:
    c = connect(redis_url)
    yield c
    await c.aclose()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver(SECRET).start()
    yield server
    await server.close()


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path).start()
    yield server
    server.stop()
