"""Stored definitions edited by hand into something this version cannot read (not JSON, a bad cron,
an interval out of range): the scheduler skips them with one warning each and fires the others; the
listings show them as broken instead of failing whole; a write over one repairs it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from conveyor import Queue, codec
from conveyor.cli import app as cli_app
from conveyor.errors import BrokenScheduleError
from conveyor.redis.connection import RedisClient, connect
from conveyor.schedules import Schedule, Scheduler, ScheduleStore, job_id_tick
from conveyor.schedules.http import make_router
from tests.schedules.conftest import T0, FakeClock


def _envelope(**changes: object) -> str:
    definition = {**Schedule(id="bad", task="t", interval_s=1.0).to_json(), **changes}
    return codec.dumps({"schedule": definition, "anchor_ms": T0 + 1000}).decode()


BROKEN = {
    "not-json": "{not json",
    "bad-cron": _envelope(cron="99 * * * *", interval_s=None),
    "huge-interval": _envelope(interval_s=1e12),
    "not-an-object": "[1, 2]",
}


@pytest.fixture
async def target(client: RedisClient, qname: str, prefix: str) -> AsyncIterator[Queue]:
    q = Queue(qname, redis=client, prefix=prefix)
    yield q
    await q.obliterate(force=True)


async def _break(client: RedisClient, store: ScheduleStore, raw: str, due_ms: int) -> None:
    await client.hset(store.keys.defs, "bad", raw)
    await client.zadd(store.keys.next, {"bad": due_ms})


async def _ticks(q: Queue) -> list[int]:
    ids = await q.client.zrange(q.keys.ready, 0, -1)
    return sorted(t for t in (job_id_tick(i) for i in ids) if t is not None)


@pytest.mark.parametrize("raw", list(BROKEN.values()), ids=list(BROKEN))
async def test_a_broken_schedule_is_listed_as_broken_and_the_others_are_listed(
    client: RedisClient, prefix: str, qname: str, raw: str
) -> None:
    store = ScheduleStore(client, prefix)
    await store.put(Schedule(id="good", task="t", queue=qname, interval_s=60))
    await _break(client, store, raw, T0)
    assert [i.id for i in await store.list()] == ["good"]
    infos, broken = await store.listing()
    assert [i.id for i in infos] == ["good"]
    assert [b.id for b in broken] == ["bad"] and broken[0].error
    with pytest.raises(BrokenScheduleError, match="'bad'"):
        await store.get("bad")


async def test_the_scheduler_skips_a_broken_schedule_with_one_warning_and_fires_the_others(
    client: RedisClient, prefix: str, target: Queue, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = ScheduleStore(client, prefix, clock=clock)
    await store.put(Schedule(id="good", task="t", queue=target.name, interval_s=1.0))
    await _break(client, store, BROKEN["bad-cron"], T0 + 500)
    scheduler = Scheduler(client, prefix=prefix, clock=clock, grace_s=0.5, lease_s=0.5,
                          maintenance_interval_s=None)
    caplog.set_level(logging.INFO, logger="conveyor.schedules")
    for _ in range(5):  # each pass claims the broken schedule again once its lease has ended
        clock.advance(1000)
        await scheduler.run_due()
    assert await _ticks(target) == [T0 + t * 1000 for t in range(1, 6)]
    about_bad = [r for r in caplog.records if r.levelno >= logging.WARNING and "bad" in r.getMessage()]
    assert len(about_bad) == 1, [r.getMessage() for r in about_bad]
    assert "'bad'" in about_bad[0].getMessage() or "bad:" in about_bad[0].getMessage()
    # Edited again (into another broken form): a new warning, once.
    await _break(client, store, BROKEN["huge-interval"], clock.now_ms)
    for _ in range(3):
        clock.advance(1000)
        await scheduler.run_due()
    about_bad = [r for r in caplog.records if r.levelno >= logging.WARNING and "bad" in r.getMessage()]
    assert len(about_bad) == 2


async def test_a_declared_schedule_whose_stored_copy_is_broken_is_written_again_at_start(
    client: RedisClient, prefix: str, target: Queue, clock: FakeClock
) -> None:
    store = ScheduleStore(client, prefix, clock=clock)
    declared = Schedule(id="bad", task="t", queue=target.name, interval_s=1.0, source="code")
    await _break(client, store, BROKEN["not-json"], T0)
    scheduler = Scheduler(client, prefix=prefix, clock=clock, grace_s=0.5, maintenance_interval_s=None,
                          schedules=[declared])
    await scheduler.sync()  # it raised: the broken copy stopped every scheduler from starting
    info = await store.get("bad")
    assert info.schedule == declared and info.next_ms == T0 + 1000
    clock.advance(1000)
    await scheduler.run_due()
    assert await _ticks(target) == [T0 + 1000]


async def test_the_api_lists_a_broken_schedule_as_broken_and_a_put_repairs_it(
    client: RedisClient, prefix: str, qname: str
) -> None:
    store = ScheduleStore(client, prefix)
    await store.put(Schedule(id="good", task="t", queue=qname, interval_s=60))
    await _break(client, store, BROKEN["not-json"], T0)
    api = FastAPI()
    api.include_router(make_router(lambda: store, lambda: None, lambda: None, lambda: True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test") as http:
        r = await http.get("/api/schedules")
        assert r.status_code == 200, r.text
        assert [s["id"] for s in r.json()["schedules"]] == ["good"]
        assert [b["id"] for b in r.json()["broken"]] == ["bad"] and r.json()["broken"][0]["error"]
        r = await http.put("/api/schedules/bad", json={"task": "t", "queue": qname, "interval_s": 60})
        assert r.status_code == 200, r.text
        r = await http.get("/api/schedules")
        assert [s["id"] for s in r.json()["schedules"]] == ["bad", "good"] and r.json()["broken"] == []


def test_the_cli_lists_a_broken_schedule_as_broken(redis_url: str, prefix: str, qname: str) -> None:
    async def setup() -> None:
        c = connect(redis_url)
        store = ScheduleStore(c, prefix)
        await store.put(Schedule(id="good", task="t", queue=qname, interval_s=60))
        await _break(c, store, BROKEN["bad-cron"], T0)
        await c.aclose()

    asyncio.run(setup())
    opts = ["--redis-url", redis_url, "--prefix", prefix]
    result = CliRunner().invoke(cli_app, ["schedules", "list", *opts])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("good ") for line in lines)
    assert any(line.startswith("bad ") and "broken" in line for line in lines), result.output
    result = CliRunner().invoke(cli_app, ["schedules", "list", "--json", *opts])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in map(json.loads, result.output.splitlines())}
    assert rows["good"]["broken"] is None and rows["bad"]["broken"]
