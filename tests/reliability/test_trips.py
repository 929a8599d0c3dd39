"""Idempotent hot-path trips: a finish-and-claim whose reply is lost is sent again and answered the
same, and nothing it leased is orphaned (docs/internals.md, "Trips")."""

from __future__ import annotations

from typing import Any

from conveyor import JobContext, JobState, Queue, Worker
from tests.conftest import running, wait_for
from tests.proxy import TcpProxy


async def test_lost_trip_replies_are_answered_again_and_orphan_nothing(
    direct: Queue, proxied: Queue, proxy: TcpProxy
) -> None:
    jobs = await direct.add_bulk([{"name": "j", "data": i} for i in range(3)])
    runs: list[int] = []

    async def handler(ctx: JobContext, data: Any) -> int:
        runs.append(data)
        return data

    # A long lease and no sweep: a lease orphaned by a lost reply would sit in `active` for the
    # whole test, so the wait below would fail instead of passing slowly.
    worker = Worker(proxied, {"j": handler}, concurrency=1, lease_ms=60_000, stalled_interval_ms=600_000)
    # Hot-path calls are the only ones through the proxy naming the `delayed` key. The first leases
    # job 0 and the third records it and leases job 1 (the second is the first one sent again): both
    # run on the server and lose their reply on the way back.
    proxy.lose_reply(direct.keys.delayed.encode(), nth=(1, 3))
    async with running(worker):

        async def all_completed() -> bool:
            return all([await direct.get_state(j.id) is JobState.COMPLETED for j in jobs])

        await wait_for(all_completed, timeout=30, what="every job completed")
    assert proxy.cuts == 2 and worker.pump_failures >= 2
    assert runs == [0, 1, 2], "each job ran once, in order"
    assert worker.stats.lost == 0, "no outcome of ours was refused as a lost lease"
    for job in jobs:
        rec = await job.record()
        assert (rec.attempts_made, rec.stalls, rec.lapses) == (1, 0, 0), rec
    events = [e for e in await direct.read_events("0-0") if e.type in ("active", "completed")]
    assert sorted(e.type for e in events) == ["active"] * 3 + ["completed"] * 3


async def _lease_one(queue: Queue) -> tuple[str, str]:
    claimed = await queue.scripts.claim("w", 60_000, 1)
    return claimed[1], claimed[2]


def _completed(job_id: str, token: str) -> list[Any]:
    return [job_id, token, "C", '"done"', -1, "", ""]


async def test_same_trip_twice_gets_the_same_reply_and_writes_once(direct: Queue) -> None:
    await direct.add_bulk([{"name": "j", "data": i} for i in range(3)])
    job_id, token = await _lease_one(direct)
    trip = {"trip_id": "w:7", "record_ttl_ms": 60_000, "outcomes": _completed(job_id, token), "count": 1}
    first = await direct.scripts.trip("w", 60_000, 1, **trip)
    again = await direct.scripts.trip("w", 60_000, 1, **trip)
    assert first[0] == 0 and again == first, "the resent trip returns the same codes and the same lease"
    assert await direct.client.zcard(direct.keys.active) == 1, "only one job was leased"
    completed = [e for e in await direct.read_events("0-0") if e.type == "completed"]
    assert [e.job_id for e in completed] == [job_id]
    # The next trip acknowledges the reply: the record goes at once.
    assert await direct.client.exists(direct.keys.trip("w:7")) == 1
    await direct.scripts.trip("w", 60_000, 0, trip_id="w:8", record_ttl_ms=60_000, acks=["w:7"])
    assert await direct.client.exists(direct.keys.trip("w:7")) == 0


async def test_an_outcome_sent_again_is_ok_by_its_token(direct: Queue) -> None:
    """Even without a trip record (expired, or a caller outside the protocol), an outcome for a job
    that still carries our token but is no longer active was ours: OK, written once."""
    await direct.add("j")
    job_id, token = await _lease_one(direct)
    first = await direct.scripts.trip("w", 60_000, 0, outcomes=_completed(job_id, token), count=1)
    again = await direct.scripts.trip("w", 60_000, 0, outcomes=_completed(job_id, token), count=1)
    assert first[0] == again[0] == 0
    completed = [e for e in await direct.read_events("0-0") if e.type == "completed"]
    assert len(completed) == 1
    # A token that is not the job's current one is still refused.
    stale = await direct.scripts.trip("w", 60_000, 0, outcomes=_completed(job_id, "1"), count=1)
    assert stale[0] == -2
