"""The chaos bookkeeping can fail: each kind of broken promise, planted in real records, events and a
real ledger, shows up in its count (so a clean chaos report means something)."""

from __future__ import annotations

import uuid

from conveyor import Queue
from conveyor.redis.connection import RedisClient
from tests.chaos.app import ledger_keys
from tests.chaos.book import Counts, Producer, all_events, job_records, settle


async def test_each_broken_promise_is_counted(client: RedisClient, queue: Queue) -> None:
    ledger_key = f"ledger:{uuid.uuid4().hex[:8]}"
    starts, ends = ledger_keys(ledger_key)
    producer = Producer(queue, 0, 1.0, (0, 0))
    # Serial 0: completed twice (two completion events), its handler ran twice.
    # Serial 1: acknowledged but its record is gone (lost).
    # Serial 2: its id now holds serial 9's data (an id handed out twice: lost).
    # Serial 3: still waiting (unfinished). Serial 4: failed. Serial 5: completed, but no handler returned.
    # Serial 6: one add made two jobs (duplicate). Serial 7: completed with another job's result.
    producer.acked = {n: f"j{n}" for n in range(8)}
    rows = {
        "j0": ("completed", 0, 0), "j2": ("completed", 9, 9), "j3": ("waiting", 3, None), "j4": ("failed", 4, None),
        "j5": ("completed", 5, 5), "j6": ("completed", 6, 6), "j6b": ("completed", 6, 6), "j7": ("completed", 7, 1),
    }
    for job_id, (state, n, result) in rows.items():
        fields = {"state": state, "data": f'{{"n":{n}}}', "attempts": "1"}
        if result is not None:
            fields["result"] = str(result)
        await client.hset(queue.keys.job(job_id), mapping=fields)
    for job_id in ("j0", "j0", "j2", "j5", "j6", "j6b", "j7"):
        await client.xadd(queue.keys.events, {"ev": "completed", "id": job_id, "att": "1"})
    for job_id in ("j0", "j0", "j2", "j6", "j6b", "j7"):
        await client.rpush(starts, f"{job_id}|t|1")
        await client.rpush(ends, f"{job_id}|t|1")
    records = await job_records(client, queue, [queue.keys.job(i) for i in rows])
    events, complete = await all_events(client, queue)
    counts = Counts()
    try:
        await settle(producer, records, events, complete, client, ledger_key, counts)
    finally:
        await client.delete(starts, ends)
    assert (counts.lost, counts.double_completed, counts.phantom, counts.duplicates) == (2, 1, 1, 1)
    assert (counts.unfinished, counts.failed, counts.wrong_results) == (1, 1, 1)
    assert (counts.reexecuted_jobs, counts.extra_runs) == (1, 1)
    assert counts.events_complete and set(counts.problems()) == {
        "lost", "double_completed", "phantom", "duplicates", "unfinished", "failed", "wrong_results"}


async def test_a_trimmed_events_stream_makes_the_count_unusable(client: RedisClient, queue: Queue) -> None:
    for i in range(5):
        await client.xadd(queue.keys.events, {"ev": "added", "id": str(i)})
    await client.xtrim(queue.keys.events, maxlen=2, approximate=False)
    _, complete = await all_events(client, queue)
    counts = Counts(events_complete=complete)
    assert counts.problems() == {"events_trimmed": 1}
