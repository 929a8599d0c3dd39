"""The event hub against a real server: one reader per queue however many subscribers, replay from an
id without gap or repeat, a lagging subscriber that catches up, and a reader that survives killed
connections and a server restart, resuming from its last id."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from conveyor import Queue
from conveyor.api.hub import EventHub, Subscription, parse_stream_id
from conveyor.errors import ConnectionFailedError
from conveyor.events import Event
from conveyor.redis.connection import RedisClient, connect
from conveyor.redis.keys import QueueKeys
from conveyor.testing import RedisServer
from tests.conftest import wait_for


def _hub(client: RedisClient, blocking: RedisClient, **kwargs: object) -> EventHub:
    return EventHub(lambda: client, lambda: blocking, "cv", block_ms=200, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[tuple[RedisClient, RedisClient]]:
    client = connect(redis_url)
    blocking = connect(redis_url, socket_timeout=None, client_name=f"hub-{uuid.uuid4().hex[:12]}")
    yield client, blocking
    await client.aclose()
    await blocking.aclose()


async def _collect(sub: Subscription, n: int) -> list[Event]:
    out: list[Event] = []
    while len(out) < n:
        event = await sub.next(timeout=30)
        assert event is not None, f"only {len(out)} of {n} events arrived"
        out.append(event)
    return out


async def _xread_clients(client: RedisClient, blocking: RedisClient) -> int:
    """Connections of the hub's blocking client now blocked (in XREAD; other tests share the server)."""
    name = blocking.connection_pool.connection_kwargs["client_name"]
    listing = await client.client_list()
    return sum(1 for c in listing if c.get("name") == name and "b" in c.get("flags", ""))


def test_stream_ids_are_checked_within_range() -> None:
    assert parse_stream_id("1-0") == (1, 0)
    assert parse_stream_id("18446744073709551615-18446744073709551615") is not None
    assert parse_stream_id("99999999999999999999-0") is None
    assert parse_stream_id("1") == (1, 0)
    assert parse_stream_id("1-") is None
    assert parse_stream_id("-1-0") is None


async def test_one_reader_fans_out_to_every_subscriber(
    clients: tuple[RedisClient, RedisClient], qname: str
) -> None:
    client, blocking = clients
    hub = _hub(client, blocking)
    q = Queue(qname, redis=client)
    try:
        subs = [hub.subscribe(qname) for _ in range(200)]
        for sub in subs:
            await sub.start()
        assert hub.followed() == {qname: 200}
        await wait_for(lambda: _xread_clients(client, blocking), what="the reader blocks in XREAD")
        assert await _xread_clients(client, blocking) == 1  # one connection reads for all 200
        jobs = [await q.add("t", {"i": i}) for i in range(5)]
        for sub in subs:
            events = await _collect(sub, 5)
            assert [e.job_id for e in events] == [j.id for j in jobs]
            assert all(e.type == "added" for e in events)
        for sub in subs:
            await sub.aclose()
        assert hub.followed() == {}  # the last subscriber leaving forgets the queue
        await wait_for(lambda: hub._readers == {}, what="reader gone")
        await wait_for(lambda: _xread_clients_is(client, blocking, 0), what="no XREAD left")
    finally:
        await hub.close()
        await q.obliterate(force=True)


async def _xread_clients_is(client: RedisClient, blocking: RedisClient, n: int) -> bool:
    return await _xread_clients(client, blocking) == n


async def test_job_subscription_sees_only_its_job(clients: tuple[RedisClient, RedisClient], qname: str) -> None:
    client, blocking = clients
    hub = _hub(client, blocking)
    q = Queue(qname, redis=client)
    try:
        mine = q.job("mine")
        async with hub.subscribe(qname, job_id=mine.id) as sub:
            await q.add("t", {}, job_id="other")
            await q.add("t", {}, job_id="mine")
            await q.cancel("other")
            await q.cancel("mine")
            events = await _collect(sub, 2)
            assert [(e.type, e.job_id) for e in events] == [("added", "mine"), ("cancelled", "mine")]
            assert await sub.next(timeout=0.3) is None
    finally:
        await hub.close()
        await q.obliterate(force=True)


async def test_replay_from_an_id_then_live_without_gap_or_repeat(
    clients: tuple[RedisClient, RedisClient], qname: str
) -> None:
    client, blocking = clients
    hub = _hub(client, blocking)
    q = Queue(qname, redis=client)
    try:
        start = await q.last_event_id()
        before = [await q.add("t", {"i": i}) for i in range(1200)]  # more than one replay batch
        async with hub.subscribe(qname, after=start) as sub:
            after = [await q.add("t", {"i": i}) for i in range(20)]
            events = await _collect(sub, 1220)
        assert [e.job_id for e in events] == [j.id for j in before + after]
        # A future id (in range): a correct stream that skips everything up to it.
        async with hub.subscribe(qname, after="18446744073709551615-0") as sub:
            await q.add("t", {})
            assert await sub.next(timeout=0.5) is None
        with pytest.raises(ValueError):
            hub.subscribe(qname, after="99999999999999999999-0")
    finally:
        await hub.close()
        await q.obliterate(force=True)


async def test_a_lagging_subscriber_rereads_what_it_missed(
    clients: tuple[RedisClient, RedisClient], qname: str
) -> None:
    client, blocking = clients
    hub = _hub(client, blocking, buffer=10)
    q = Queue(qname, redis=client)
    try:
        async with hub.subscribe(qname) as slow:
            jobs = [await q.add("t", {"i": i}) for i in range(300)]
            await wait_for(lambda: slow._lagged, what="the buffer overflowed")
            events = await _collect(slow, 300)
        assert [e.job_id for e in events] == [j.id for j in jobs]
    finally:
        await hub.close()
        await q.obliterate(force=True)


async def test_a_subscriber_holds_at_most_buffer_bytes_then_rereads_or_ends(
    clients: tuple[RedisClient, RedisClient], qname: str
) -> None:
    client, blocking = clients
    hub = _hub(client, blocking, buffer_bytes=20_000)  # the 10,000-event bound stays far away
    q = Queue(qname, redis=client)
    try:
        async with hub.subscribe(qname) as slow, hub.subscribe(qname, end_on_overflow=True) as ending:
            # 60 events of 1 KB each (a job's progress, say): over the bound, in few events.
            ids = [f"j{i}" for i in range(60)]
            for job_id in ids:
                await client.xadd(QueueKeys(qname, "cv").events, {"ev": "progress", "id": job_id, "p": "x" * 1000})
            await wait_for(lambda: slow._lagged and ending.closed, what="both buffers overflowed")
            assert ending.overflowed and await ending.next(timeout=0) is None and not ending._buffer
            assert slow._bytes == 0 and not slow._buffer  # what it held was dropped ...
            events = await _collect(slow, 60)  # ... and re-read from the stream, in order
        assert [e.job_id for e in events] == ids
        assert hub.followed() == {}
    finally:
        await hub.close()
        await q.obliterate(force=True)


async def _add_through_faults(q: Queue, job_id: str) -> str:
    """The producer's own connection sees the restart too: retry (a fixed job id makes it safe)."""
    async def attempt() -> bool:
        try:
            await q.add("t", {}, job_id=job_id)
        except ConnectionFailedError:
            return False
        return True

    await wait_for(attempt, what="the server accepts an enqueue again")
    return job_id


async def test_reader_survives_killed_connections_and_a_restart(qname: str) -> None:
    server = RedisServer(extra_args=["--appendonly", "yes"]).start()
    client = connect(server.url)
    blocking = connect(server.url, socket_timeout=5, client_name=f"hub-{uuid.uuid4().hex[:12]}")
    hub = _hub(client, blocking)
    q = Queue(qname, redis=client)
    try:
        async with hub.subscribe(qname) as sub:
            first = await q.add("t", {})
            assert (await _collect(sub, 1))[0].job_id == first.id
            # A reset connection: the reader's blocked XREAD is killed.
            await wait_for(lambda: _xread_clients(client, blocking), what="reader blocked")
            await client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            second = await q.add("t", {})
            assert (await _collect(sub, 1))[0].job_id == second.id
            # The server restarts (with its AOF): the reader reconnects and resumes from its last id.
            await asyncio.to_thread(server.restart)
            third = await _add_through_faults(q, "third")
            fourth = await _add_through_faults(q, "fourth")
            assert [e.job_id for e in await _collect(sub, 2)] == [third, fourth]
            # A server that comes back empty (no persistence): ids restart; the reader follows them.
            await asyncio.to_thread(server.stop)
            for path in server.dir.glob("appendonlydir/*"):
                path.unlink()
            await asyncio.to_thread(server.start, server.port)
            fifth = await _add_through_faults(q, "fifth")
            assert (await _collect(sub, 1))[0].job_id == fifth
    finally:
        await hub.close()
        await client.aclose()
        await blocking.aclose()
        server.close()


async def test_a_closed_subscription_never_joins_and_ends_a_waiting_read(
    clients: tuple[RedisClient, RedisClient], qname: str
) -> None:
    client, blocking = clients
    hub = _hub(client, blocking)
    try:
        early = hub.subscribe(qname)
        await early.aclose()  # closed before its first read (a client that left at once)
        assert await early.next(timeout=None) is None
        assert hub.followed() == {}
        sub = hub.subscribe(qname)
        await sub.start()
        assert hub.followed() == {qname: 1}
        reading = asyncio.ensure_future(sub.next(timeout=None))
        await asyncio.sleep(0)
        await sub.aclose()
        assert await asyncio.wait_for(reading, 30) is None
        assert hub.followed() == {}
    finally:
        await hub.close()
