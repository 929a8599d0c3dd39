"""Alert test fixtures: a key prefix per test, and the handler tests' real local receivers (an HTTP
server that verifies webhook signatures and an SMTP server with STARTTLS and AUTH)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from conveyor.redis.connection import RedisClient, connect
from tests.handlers.conftest import SECRET, receiver, smtp

__all__ = ["SECRET", "receiver", "smtp"]


@pytest.fixture
def prefix() -> str:
    return f"al{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def rclient(redis_url: str) -> AsyncIterator[RedisClient]:
    c = connect(redis_url)
    yield c
    await c.aclose()
