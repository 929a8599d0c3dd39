"""A heartbeat no sooner than the lease ends lets leases lapse between beats; the worker accepts it
(some tests use it on purpose) but says so once at start."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from conveyor import JobContext, Queue, Worker
from tests.conftest import running

LOGGER = "conveyor.worker.worker"


async def _ok(ctx: JobContext, data: Any) -> Any:
    return data


def _beat_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING and "heartbeat_ms" in r.getMessage()]


@pytest.mark.parametrize("heartbeat_ms", [1000, 5000])
async def test_a_heartbeat_not_below_the_lease_is_warned_of_once_at_start(
    queue: Queue, caplog: pytest.LogCaptureFixture, heartbeat_ms: int
) -> None:
    """Before, such a setting was taken silently and leases lapsed between beats."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    worker = Worker(queue, {"ok": _ok}, lease_ms=1000, heartbeat_ms=heartbeat_ms)
    async with running(worker):
        assert await (await queue.add("ok", 1)).result(timeout=30) == 1
    (message,) = _beat_warnings(caplog)
    assert f"heartbeat_ms ({heartbeat_ms})" in message and "lease_ms (1000)" in message


async def test_a_heartbeat_below_the_lease_is_not_warned_of(queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with running(Worker(queue, {"ok": _ok}, lease_ms=1000, heartbeat_ms=999)):
        pass
    async with running(Worker(queue, {"ok": _ok}, lease_ms=1000)):
        pass
    assert _beat_warnings(caplog) == []
