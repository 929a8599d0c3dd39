"""The app the chaos workers run (`conveyor worker tests.chaos.app:app`).

Its one task records every run in a separate ledger server that no fault touches: the job id, the
lease token and the attempt, once when the handler starts and once when it returns. The harness
compares the ledger with the queue's final state and its events, so the counts do not rely on
what the faulted server or the workers say about themselves.
Environment: CONVEYOR_PREFIX, CHAOS_QUEUE, CHAOS_LEDGER_URL, CHAOS_LEDGER_KEY, CHAOS_REPLICAS
(outcomes acknowledged only once that many replicas have them; unset = 0), CHAOS_PARENT_QUEUE:
when set, a queue (in another Cluster slot) whose task `sum` is the parent of flows of `work` jobs,
and CHAOS_PARTITIONS (a partitioned queue of that many partitions; unset = a plain queue).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis.asyncio as aioredis

from conveyor import Conveyor, JobContext
from conveyor.redis.durability import Durability

QUEUE = os.environ.get("CHAOS_QUEUE", "chaos")
REPLICAS = int(os.environ.get("CHAOS_REPLICAS", "0"))
PARTITIONS = int(os.environ.get("CHAOS_PARTITIONS", "0"))  # 0: a plain queue
app = Conveyor(name="chaos", prefix=os.environ.get("CONVEYOR_PREFIX", "cv"),
               durability=Durability(replicas=REPLICAS, timeout_ms=2000) if REPLICAS else None)
if PARTITIONS:
    app.declare_queue(QUEUE, partitions=PARTITIONS)
_ledger: list[aioredis.Redis] = []


def ledger_keys(base: str) -> tuple[str, str]:
    """(starts, ends): lists of "job id|token|attempt", one entry per handler start and return."""
    return f"{base}:starts", f"{base}:ends"


def _client() -> aioredis.Redis:
    if not _ledger:
        _ledger.append(aioredis.Redis.from_url(os.environ["CHAOS_LEDGER_URL"], decode_responses=True))
    return _ledger[0]


@app.task(queue=QUEUE, name="work")
async def work(ctx: JobContext, data: dict[str, Any]) -> int:
    starts, ends = ledger_keys(os.environ["CHAOS_LEDGER_KEY"])
    run = f"{ctx.job_id}|{ctx.token}|{ctx.attempt}"
    await _client().rpush(starts, run)
    await asyncio.sleep(data.get("ms", 0) / 1000)
    await _client().rpush(ends, run)
    return int(data["n"])


PARENT_QUEUE = os.environ.get("CHAOS_PARENT_QUEUE")
if PARENT_QUEUE:

    @app.task(queue=PARENT_QUEUE, name="sum")
    async def total(ctx: JobContext, data: dict[str, Any]) -> int:
        """A flow parent: the sum of its children's results (each child returns its serial). It reads
        the faulted server itself, so a connection reset mid-run is a failed attempt: the flows are
        added with attempts to spare (tests/chaos/book.py)."""
        starts, ends = ledger_keys(os.environ["CHAOS_LEDGER_KEY"])
        run = f"{ctx.job_id}|{ctx.token}|{ctx.attempt}"
        await _client().rpush(starts, run)
        children = await ctx.children()
        await _client().rpush(ends, run)
        return sum(int(v) for v in children.results.values())
