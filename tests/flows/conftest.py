"""Flow tests: queues placed in different Cluster slots, workers for several queues at once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from redis.crc import key_slot

from conveyor import Queue, Worker
from conveyor.redis.connection import RedisClient
from conveyor.redis.keys import QueueKeys


def names_in_other_slots(base: str, n: int) -> list[str]:
    """`n` queue names whose keys live in pairwise different Cluster slots (and, with 3 masters
    splitting 16384 slots evenly, usually on different nodes)."""
    out: list[str] = []
    slots: set[int] = set()
    i = 0
    while len(out) < n:
        name = f"{base}-{i}"
        slot = key_slot(QueueKeys(name).meta.encode())
        if (slot // 5462 not in {s // 5462 for s in slots} or len(slots) >= 3) and slot not in slots:
            out.append(name)
            slots.add(slot)
        i += 1
    return out


@pytest.fixture
async def queues(client: RedisClient, qname: str) -> AsyncIterator[list[Queue]]:
    qs = [Queue(n, redis=client) for n in names_in_other_slots(qname, 3)]
    yield qs
    for q in qs:
        await q.obliterate(force=True)


@asynccontextmanager
async def workers(queues: list[Queue], handlers: Mapping[Queue, Mapping[str, Any]], **options: Any
                  ) -> AsyncIterator[list[Worker]]:
    """One worker per queue named in `handlers`, closed at the end."""
    options.setdefault("lease_ms", 5000)
    options.setdefault("stalled_interval_ms", 200)
    async with AsyncExitStack() as stack:
        started = []
        for q, h in handlers.items():
            w = Worker(q, h, **options)
            await w.start()
            stack.push_async_callback(w.close, 5.0)
            started.append(w)
        yield started
