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
