"""The wake hub keeps serving its idle queues whatever error its blocking wait meets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from conveyor.redis.connection import connect
from conveyor.testing import RedisServer
from conveyor.worker.wakehub import WakeHub
from tests.conftest import wait_for


@pytest.fixture
def acl_server() -> Iterator[RedisServer]:
    """A server of its own: the test changes a user's permissions."""
    with RedisServer() as server:
        yield server


async def test_an_unexpected_error_of_the_wait_does_not_strand_the_idle_queues(acl_server: RedisServer) -> None:
    """BLPOP refused with an error that is not a connection fault (NOPERM here): the hub logs it and
    waits again, so once the wait works the marker reaches the idle queue. (A serving task that died
    on such an error left its queues waiting for good.)"""
    admin = connect(acl_server.url)
    await admin.execute_command("ACL", "SETUSER", "hub", "on", ">pw", "~*", "&*", "+@all", "-blpop")
    client = connect(f"redis://hub:pw@127.0.0.1:{acl_server.port}/0")
    hub = WakeHub(client, block_s=0.5)
    wake_key, interrupt_key = f"t:{uuid.uuid4().hex}:wake", f"t:{uuid.uuid4().hex}:hub"
    waiting = asyncio.create_task(hub.wait(wake_key, interrupt_key, None))
    try:
        await wait_for(lambda: hub.waits >= 3, timeout=60, what="the refused wait sent again")
        assert not waiting.done()
        await admin.execute_command("ACL", "SETUSER", "hub", "+blpop")
        await admin.lpush(wake_key, "1")
        assert await asyncio.wait_for(waiting, 60) is True, "the marker reached the idle queue"
        assert await admin.llen(wake_key) == 0, "the hub popped it"
    finally:
        waiting.cancel()
        await hub.close()
        await client.aclose()
        await admin.aclose()


async def test_a_marker_calls_the_waiters_callback_once_before_its_task_resumes(redis_url: str) -> None:
    """The worker's claim starts from `on_wake`, as the hub hands the marker over; a wait that timed
    out or was given up calls nothing, and its marker goes back to the list for another process."""
    client = connect(redis_url)
    hub = WakeHub(client, block_s=0.5)
    wake_key, interrupt_key = f"t:{uuid.uuid4().hex}:wake", f"t:{uuid.uuid4().hex}:hub"
    calls: list[bool] = []
    tasks: list[asyncio.Task[bool]] = []
    try:
        waiting = asyncio.create_task(hub.wait(wake_key, interrupt_key, None, lambda: calls.append(tasks[0].done())))
        tasks.append(waiting)
        await wait_for(lambda: hub.watched == 1 and hub.waits >= 1, timeout=60, what="the queue in the hub's wait")
        await client.lpush(wake_key, "1")
        assert await asyncio.wait_for(waiting, 60) is True
        assert calls == [False], "called once, while the waiting task had not resumed yet"

        assert await hub.wait(wake_key, interrupt_key, 0.2, lambda: calls.append(True)) is False
        assert calls == [False], "a wait that timed out calls nothing"

        given_up = asyncio.create_task(hub.wait(wake_key, interrupt_key, None, lambda: calls.append(True)))
        tasks.append(given_up)
        await wait_for(lambda: hub.watched == 1, timeout=60, what="the second wait in the hub")
        given_up.cancel()
        await asyncio.gather(given_up, return_exceptions=True)
        assert hub.watched == 0
        await client.lpush(wake_key, "1")
        # The hub's wait in flight may pop the marker (and put it back) before it ends.
        await wait_for(lambda: all(g.task is None for g in hub._groups.values()), timeout=60,
                       what="the hub's waits over")
        assert calls == [False], "a wait that was given up calls nothing"
        assert await client.llen(wake_key) == 1, "its marker stays for another process"
    finally:
        for task in tasks:
            task.cancel()
        await hub.close()
        await client.aclose()
