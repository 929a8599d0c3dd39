"""Fixtures for the service tests: a unique key prefix per test and service processes cleaned up after."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor.testing import RedisServer
from tests.service.process import ServiceProcess


@pytest.fixture
def prefix() -> str:
    return f"svc{uuid.uuid4().hex[:10]}"


@pytest.fixture
def services() -> Iterator[Callable[..., ServiceProcess]]:
    """Start service processes with `services(redis_url, prefix, **env)`; all are killed at teardown."""
    started: list[ServiceProcess] = []

    def start(redis_url: str, prefix: str, **settings: Any) -> ServiceProcess:
        proc = ServiceProcess(redis_url, prefix, **settings)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server only this test uses, so it may stop it or change its ACLs."""
    with RedisServer() as server:
        yield server
