"""Named limiters shared across queues: admission never exceeds them (several processes, three
queues), reported usage corrects them, a killed process gives its capacity back within a lease (on
a standalone server and on a Cluster where the limiter lives in another slot), and bad input fails
clearly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from conveyor import Conveyor, JobSpec, Queue, Worker
from conveyor.errors import ConfigurationError, ScriptInputError, UnknownLimiterError, UsageReportError
from conveyor.limits import Adaptive, Estimate, Limiter, LimiterUse, RateLimit, SharedLimiter, Usage
from conveyor.redis.connection import RedisClient, connect
from tests.conftest import running, wait_for
from tests.limits.conftest import ROOT, Fleet, claim_records, max_in_window
from tests.limits.fleet_worker import test_key as fleet_key


def _name(qname: str) -> str:
    return "prov:" + qname


async def _released(lim: SharedLimiter) -> bool:
    """No hold and no open reservation. An idle worker's claim reserves room and confirms it one round
    trip later (the fleet's idle workers probe every second), so a reading right after the last job
    can land in between: callers wait for this for 2 s, under the workers' 5 s lease (a leaked hold
    would last the whole lease)."""
    state = await lim.state()
    return state["concurrency"]["held"] == 0 and state["open_reservations"] == 0


async def _values(client: RedisClient, key: str) -> list[int]:
    return [int(v) for v in await client.lrange(key, 0, -1)]


async def test_one_limiter_holds_across_three_queues(redis_url: str, qname: str, fleet) -> None:
    client = connect(redis_url)
    name = _name(qname)
    lim = SharedLimiter(client, name)
    await lim.declare(Limiter(name, requests=RateLimit(10, per_s=2), concurrency=3))
    queues = [Queue(f"{qname}-{i}", redis=client) for i in range(3)]
    try:
        for q in queues:
            # 700 ms a job at 5 starts/s: calls overlap unless the cap of 3 wrongly held them to one.
            await q.add_bulk([JobSpec("sleep", {"ms": 700, "usage": [20, 10]}) for _ in range(12)])
        fleets = [fleet(q.name).start(processes=1, concurrency=4, limiters=json.dumps([[name, 100, 50]]))
                  for q in queues]

        async def done() -> bool:
            for f in fleets:
                f.check_alive()
            counts = [(await q.counts())["completed"] for q in queues]
            return counts == [12, 12, 12]

        await wait_for(done, timeout=120, interval=0.1, what="36 jobs over three queues done")
        claims = [(int(r["started"]), 1) for q in queues for r in await claim_records(q)]
        assert len(claims) == 36
        # Admission is in the limiter (claim times trail it by a round trip): any window of 90 % of
        # per_s holds at most the limit; three queues each limited alone would start 3x as many.
        assert max_in_window(claims, 1800) <= 10
        seen = await _values(client, f"test:{{lim:{name}}}:seen")
        assert len(seen) == 36 and max(seen) <= 3
        assert max(seen) >= 2  # jobs of the queues did share the cap side by side
        await wait_for(lambda: _released(lim), timeout=2, interval=0.02, what="every hold and reservation released")
        state = await lim.state()
        assert state["totals"]["ok"] == 36
        assert state["totals"]["tokens_in"] == 36 * 20 and state["totals"]["tokens_out"] == 36 * 10
        for q in queues:
            assert {r["worker"] for r in await _workers(q)} != set()
    finally:
        for q in queues:
            await q.obliterate(force=True)
        await client.delete(*lim.keys.all, lim.keys.log, f"test:{{lim:{name}}}:seen",
                            f"test:{{lim:{name}}}:starts", f"test:{{lim:{name}}}:inflight")
        await client.aclose()


async def _workers(queue: Queue) -> list[dict[str, str]]:
    ids = list(await queue.client.zrange(queue.keys.completed, 0, -1))
    return [{"worker": await queue.client.hget(queue.keys.job(i), "worker") or ""} for i in ids]


async def test_reported_usage_refunds_the_estimate(sq: Queue) -> None:
    name = _name(sq.name)
    lim = SharedLimiter(sq.client, name)
    await lim.declare(Limiter(name, tokens_in=RateLimit(400, per_s=1)))  # one 400-token job per second

    async def handler(ctx, data) -> None:
        ctx.report_usage(tokens_in=10, tokens_out=3)

    await sq.add_bulk([JobSpec("llm", i) for i in range(6)])
    cursor = await sq.last_event_id()
    async with running(Worker(sq, {"llm": handler}, concurrency=3,
                              limiters=[LimiterUse(name, Estimate(tokens_in=400))])):
        await wait_for(lambda: _completed(sq, 6), timeout=60, what="6 jobs done")
    claims = [int(e.id.split("-")[0]) for e in await sq.read_events(cursor, count=1000) if e.type == "active"]
    # Without the refund of 390 tokens per job no second could hold two claims.
    assert max(sum(1 for t in claims if s <= t < s + 1000) for s in claims) >= 2
    state = await lim.state()
    assert state["totals"]["tokens_in"] == 60 and state["totals"]["tokens_out"] == 18
    assert state["levels"]["tokens_in"]["available"] <= 1  # refunds never fill it beyond its capacity
    await sq.client.delete(*lim.keys.all)


async def _completed(queue: Queue, n: int) -> bool:
    return (await queue.counts())["completed"] >= n


CRASHER = """
import asyncio, os, signal, sys
from conveyor.limits import SharedLimiter
from conveyor.redis.connection import connect

async def main(url, name, rid, ttl):
    lim = SharedLimiter(connect(url), name)
    grant = await lim.acquire(rid, 3, 100, 0, int(ttl))
    print(grant.granted, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # charged, nothing leased: the crash in between

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture
async def any_client(backend_url: str) -> AsyncIterator[RedisClient]:
    c = connect(backend_url)
    yield c
    await c.aclose()


async def test_crash_between_charge_and_lease_gives_capacity_back(backend_url: str, any_client: RedisClient,
                                                                  qname: str) -> None:
    name = _name(qname)
    lim = SharedLimiter(any_client, name)
    await lim.declare(Limiter(name, requests=RateLimit(3, per_s=3600, burst=2),
                              tokens_in=RateLimit(300, per_s=3600, burst=299), concurrency=3))
    ttl = 15_000  # the checks below run before it lapses even when the machine is busy
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHER, backend_url, name, "dead-worker:1", str(ttl), cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == -signal.SIGKILL and out.strip() == b"3"
    state = await lim.state()
    assert state["concurrency"]["held"] == 3 and state["open_reservations"] == 1
    assert (await lim.acquire("other:1", 1, 1, 0, ttl)).granted == 0  # all taken: never over-admitted
    await wait_for(lambda: _expired(lim), timeout=60, what="the reservation expires")
    # The next call of any worker sweeps it: the slots and every charged unit come back.
    grant = await lim.acquire("other:2", 3, 100, 0, ttl)
    assert grant.granted == 3
    state = await lim.state()
    assert state["totals"]["expired"] == 1 and state["concurrency"]["held"] == 3
    await lim.trim("other:2", 0, ttl)
    state = await lim.state()
    assert state["concurrency"]["held"] == 0 and state["levels"]["requests"]["available"] >= 0
    await any_client.delete(*lim.keys.all, lim.keys.log)


async def _expired(lim: SharedLimiter) -> bool:
    return (await lim.state())["expired_not_swept"] >= 1


async def test_killed_worker_gives_holds_back_within_a_lease(backend_url: str, any_client: RedisClient,
                                                             qname: str) -> None:
    """A worker killed while its jobs hold the limiter: the holds expire after its lease and another
    process runs the jobs, never more than the cap at once. On a Cluster the limiter and the queue
    live in different slots."""
    name = _name(qname)
    lim = SharedLimiter(any_client, name)
    await lim.declare(Limiter(name, concurrency=2))
    queue = Queue(qname, redis=any_client)
    assert key_slot(lim.keys.all[0].encode()) != key_slot(queue.keys.meta.encode())  # two slots (on a Cluster)
    uses = json.dumps([[name, 0, 0]])
    f = Fleet(backend_url, qname)
    try:
        hang = await queue.add_bulk([JobSpec("hang", {"ms": 120_000}) for _ in range(2)])
        f.start(processes=1, concurrency=4, limiters=uses)
        await wait_for(lambda: _held(lim, 2), timeout=60, what="the first process holds the limiter")
        hung = [fleet_key(qname, f"hung:{job.id}") for job in hang]
        await wait_for(lambda: _all_exist(any_client, hung), timeout=60, what="the long jobs started")
        await queue.add_bulk([JobSpec("sleep", {"ms": 50}) for _ in range(4)])
        f.start(processes=1, concurrency=4, limiters=uses)
        f.kill(0)
        async def done() -> bool:
            f.check_alive()
            return (await queue.counts())["completed"] == 6
        await wait_for(done, timeout=120, interval=0.1, what="all jobs done after the kill")
        seen = await _values(any_client, f"test:{{lim:{name}}}:seen")
        assert max(seen) <= 2
        await wait_for(lambda: _released(lim), timeout=2, interval=0.02, what="every hold and reservation released")
        state = await lim.state()
        assert state["totals"]["expired"] >= 2  # the dead process's holds came back by expiring
    finally:
        f.stop()
        await queue.obliterate(force=True)
        await any_client.delete(*lim.keys.all)
        for suffix in ("seen", "starts", "inflight"):
            await any_client.delete(f"test:{{lim:{name}}}:{suffix}")


async def _all_exist(client: RedisClient, keys: list[str]) -> bool:
    return all([await client.exists(k) == 1 for k in keys])


async def _held(lim: SharedLimiter, n: int) -> bool:
    return (await lim.state())["concurrency"]["held"] >= n


async def test_bad_input_is_refused_clearly(sq: Queue) -> None:
    name = _name(sq.name)
    for bad in (
        lambda: Limiter("bad name!", concurrency=1),
        lambda: Limiter(name),  # limits nothing
        lambda: Limiter(name, concurrency=0),
        lambda: Limiter(name, concurrency=-3),
        lambda: Limiter(name, requests=RateLimit(-1)),
        lambda: Limiter(name, tokens_in=RateLimit(10**13)),
        lambda: Limiter(name, adaptive=Adaptive(maximum=5, minimum=6)),
        lambda: Limiter(name, adaptive=Adaptive(maximum=5, decrease=1.5)),
        lambda: Estimate(tokens_in=-5),
        lambda: Estimate(tokens_out=10**10),
        lambda: LimiterUse("x y"),
    ):
        with pytest.raises(ConfigurationError):
            bad()
    with pytest.raises(UsageReportError):
        Usage(tokens_in=-1)
    lim = SharedLimiter(sq.client, name)
    with pytest.raises(UnknownLimiterError):
        await lim.acquire("r", 1, 0, 0, 1000)
    with pytest.raises(UnknownLimiterError):
        await lim.state()
    worker = Worker(sq, {"x": lambda ctx, d: None}, limiters=[LimiterUse(name)])
    with pytest.raises(UnknownLimiterError):
        await worker.start()
    app = Conveyor()
    app.task(queue=sq.name, limiters=[LimiterUse("never:declared")])(_task)
    with pytest.raises(UnknownLimiterError):
        app.worker(sq.name)

    await lim.declare(Limiter(name, concurrency=2))
    grant = await lim.acquire("r1", 1, 5, 5, 10_000)
    assert grant.granted == 1
    await lim.confirm("r1", ["tok-1"], 10_000)
    with pytest.raises(ScriptInputError):
        await lim.release([("tok-1", -5, 0, "ok", 0)], 10_000)  # negative usage: nothing written
    with pytest.raises(ScriptInputError):
        await lim.release([("tok-1", 5, 0, "maybe", 0)], 10_000)
    assert (await lim.state())["concurrency"]["held"] == 1
    assert await lim.release([("tok-1", 5, 0, "ok", 0)], 10_000) == [0]
    assert await lim.release([("tok-1", 5, 0, "ok", 0)], 10_000) == [-1]  # reported twice: refused
    state = await lim.state()
    assert state["concurrency"]["held"] == 0 and state["totals"]["tokens_in"] == 5

    # A handler reporting twice or a negative usage gets a clear error in the handler.
    errors: list[str] = []

    async def twice(ctx, data) -> None:
        ctx.report_usage(1, 1)
        try:
            ctx.report_usage(1, 1)
        except UsageReportError as exc:
            errors.append(str(exc))
        try:
            ctx.report_usage(-1, 0)
        except UsageReportError as exc:
            errors.append(str(exc))

    await sq.add("twice", {})
    async with running(Worker(sq, {"twice": twice}, limiters=[LimiterUse(name)])):
        await wait_for(lambda: _completed(sq, 1), timeout=30, what="job done")
    assert len(errors) == 2 and "already reported" in errors[0]
    await wait_for(lambda: _held(lim, 0), timeout=30, what="slot released")
    assert (await lim.state())["concurrency"]["held"] == 0
    await sq.client.delete(*lim.keys.all)


async def _task(ctx, data: dict) -> None:
    return None


async def test_a_429_from_a_call_started_in_the_millisecond_of_the_decrease_does_not_halve_again(
    sq: Queue,
) -> None:
    """A call that started in the same millisecond as the last decrease may have been in flight when
    it was made: its 429 belongs to that congestion episode. Before, a start equal to the decrease's
    time counted as a new episode, so on a fast machine the limit was halved twice for one episode."""
    name = _name(sq.name)
    lim = SharedLimiter(sq.client, name)
    await lim.declare(Limiter(name, adaptive=Adaptive(maximum=8, minimum=1, decrease=0.5, window=1.0)))
    info, st = lim.keys.all[3], lim.keys.all[1]
    for rid in ("x1", "x2", "x3", "x4", "x5"):
        assert (await lim.acquire(rid, 1, 0, 0, 60_000)).granted == 1
        await lim.confirm(rid, [rid + "-h"], 60_000)
    await lim.release([("x1-h", None, None, "429", 0)], 60_000)
    assert int((await lim.state())["concurrency"]["adaptive_limit"]) == 4
    decreased_at = int(float(await sq.client.hget(st, "dec_at")))
    entry = (await sq.client.hget(info, "x2-h")).split("|")
    await sq.client.hset(info, "x2-h", "|".join([*entry[:4], str(decreased_at)]))  # started in that ms
    await lim.release([("x2-h", None, None, "429", 0)], 60_000)
    assert int((await lim.state())["concurrency"]["adaptive_limit"]) == 3  # capped at the 3 in flight, not 2
    await sq.client.delete(*lim.keys.all)


async def test_adaptive_limit_moves_within_bounds(sq: Queue) -> None:
    """The AIMD rule itself (the bench shows it against a real server): a 429 cuts the limit once
    per congestion episode, a run of successes raises it, never outside [minimum, maximum]."""
    name = _name(sq.name)
    lim = SharedLimiter(sq.client, name)
    await lim.declare(Limiter(name, adaptive=Adaptive(maximum=8, minimum=2, decrease=0.5, window=1.0)))

    async def run_one(rid: str, signal_: str, after: int = 0) -> None:
        grant = await lim.acquire(rid, 1, 0, 0, 10_000)
        assert grant.granted == 1
        await lim.confirm(rid, [rid + "-h"], 10_000)
        await lim.release([(rid + "-h", None, None, signal_, after)], 10_000)

    async def limit() -> int:
        return int((await lim.state())["concurrency"]["adaptive_limit"])

    assert await limit() == 8
    for rid in ("x1", "x2", "x3", "x4", "x5"):
        assert (await lim.acquire(rid, 1, 0, 0, 10_000)).granted == 1
        await lim.confirm(rid, [rid + "-h"], 10_000)
    await lim.release([("x1-h", None, None, "429", 0)], 10_000)
    assert await limit() == 4  # 8 x 0.5 (and 4 still in flight)
    # Started before that decrease: no second halving, but a 429 caps it at the calls in flight.
    await lim.release([("x2-h", None, None, "429", 0)], 10_000)
    assert await limit() == 3
    await lim.release([("x3-h", None, None, "timeout", 0)], 10_000)
    assert await limit() == 3
    await lim.release([("x4-h", None, None, "ok", 0), ("x5-h", None, None, "ok", 0)], 10_000)
    await run_one("d", "429")
    assert await limit() == 2  # 1.5, nothing in flight: never below the minimum
    for i in range(10):
        await run_one(f"u{i}", "ok")
    assert await limit() == 2  # one call at a time leaves the limit unused: no evidence, no rise

    async def run_full(tag: str, successes: int) -> None:
        """Keep every slot of the limit held; each success ends while the limit is in full use."""
        held: list[str] = []
        for i in range(successes + 1):
            while len(held) < await limit():
                rid = f"{tag}{i}-{len(held)}"
                assert (await lim.acquire(rid, 1, 0, 0, 10_000)).granted == 1
                await lim.confirm(rid, [rid + "-h"], 10_000)
                held.append(rid + "-h")
            if i < successes:
                await lim.release([(held.pop(0), None, None, "ok", 0)], 10_000)
        await lim.release([(h, None, None, "err", 0) for h in held], 10_000)

    await run_full("s", 2)
    assert await limit() == 3  # a window of successes (2) at full use raised it by one
    await run_full("t", 200)
    assert await limit() == 8  # never above the maximum
    # The adaptive limit is what admission uses.
    granted = (await lim.acquire("many", 20, 0, 0, 10_000)).granted
    assert granted == 8
    await lim.trim("many", 0, 10_000)
    # A Retry-After pauses admission fleet-wide.
    await run_one("p", "429", after=60_000)
    grant = await lim.acquire("paused", 1, 0, 0, 10_000)
    assert grant.granted == 0 and grant.reason == "paused" and grant.retry_in_ms > 50_000
    await sq.client.delete(*lim.keys.all)
