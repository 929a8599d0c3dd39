"""Fixtures for the handler tests: an app with its own key prefix per test, and the local peers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor
from conveyor.handlers.ai import Provider
from tests.handlers.servers import ChatServer, Receiver, SmtpServer

SECRET = "whsec_Y29udmV5b3ItdGVzdC1zZWNyZXQtMzItYnl0ZXMhISE="  # 32 bytes, base64


@pytest.fixture
async def app(redis_url: str) -> AsyncIterator[Conveyor]:
    """An app whose keys live under a prefix of their own, so fixed queue names never collide."""
    application = Conveyor(redis_url, prefix=f"h{uuid.uuid4().hex[:10]}")
    yield application
    for name in list(application.queue_configs):
        await application.queue(name).obliterate(force=True)
    await application.close()


@pytest.fixture
async def chat() -> AsyncIterator[ChatServer]:
    server = await ChatServer().start()
    yield server
    await server.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver(SECRET).start()
    yield server
    await server.close()


@pytest.fixture
async def local_servers() -> AsyncIterator[tuple[Receiver, Receiver]]:
    """Open receivers (no signature needed) on 127.0.0.1 and on [::1]."""
    v4, v6 = await Receiver(None).start(), await Receiver(None).start(host="::1")
    yield v4, v6
    await v4.close()
    await v6.close()


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path).start()
    yield server
    server.stop()


def provider(chat: ChatServer, mode: str, *, name: str | None = None, timeout_s: float = 5.0) -> Provider:
    return Provider(name or mode, chat.base_url(mode), "test-model", "test-key", timeout_s)
