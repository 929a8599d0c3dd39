"""The mover: delivers a queue's outbox records to the parents' slots (docs/flows.md, "The hand-over").

Each record was written by the script that ended a child, in the child's slot. Delivery is one
idempotent script in the parent's slot (a child is counted at most once), and the record is deleted
only after it, so a process killed anywhere in between leaves the record to be delivered again.
Every worker of a queue runs one; two movers delivering the same record is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor.errors import ConnectionFailedError, ScriptInputError
from conveyor.job import split_ref
from conveyor.redis import flow_scripts
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import guarded
from conveyor.redis.keys import QueueKeys
from conveyor.redis.scripts import QueueScripts

logger = logging.getLogger(__name__)

SCAN_COUNT = 200
PARALLEL = 32  # deliveries in flight at once


class OutboxMover:
    """Drains the outbox of one queue; `kick` wakes it early (the worker sets it after recording the
    end of a flow job), else it looks every `interval_s`."""

    def __init__(self, client: RedisClient, keys: QueueKeys, events_maxlen: int, interval_s: float) -> None:
        self.client = client
        self.keys = keys
        self.maxlen = events_maxlen
        self.interval_s = interval_s
        self.kick = asyncio.Event()
        self.delivered = 0
        # A hook for tests of crash safety: awaited between delivery and deletion.
        self.between: Callable[[str], Awaitable[None]] | None = None

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                moved = await self.drain()
                failures = 0
            except ConnectionFailedError as exc:
                failures += 1
                logger.warning("queue %s: flow hand-over failed (%s); retrying", self.keys.queue, exc)
                await asyncio.sleep(min(0.05 * 2 ** failures, 5.0))
                continue
            if moved:
                continue
            try:
                async with asyncio.timeout(self.interval_s):
                    await self.kick.wait()
            except TimeoutError:
                pass
            self.kick.clear()

    async def drain(self) -> int:
        """Deliver every record present now (bounded batches); returns how many were delivered."""
        total, cursor = 0, 0
        while True:
            reply: Any = await guarded(
                self.client.hscan(self.keys.outbox, cursor, count=SCAN_COUNT), "reading the flow outbox")
            cursor, batch = reply
            items = list(batch.items())
            for start in range(0, len(items), PARALLEL):
                await asyncio.gather(*(self.deliver(f, r) for f, r in items[start:start + PARALLEL]))
            total += len(items)
            if not cursor:
                return total

    async def deliver(self, field: str, record: str) -> None:
        """Deliver one record, then delete it (unless the child ended again meanwhile)."""
        kind, _, rest = record.partition("|")
        parent, _, payload = rest.partition("|")
        try:
            if kind == "K":
                await self._cancel_children(payload.split())
            elif kind in ("C", "F") and parent:
                pq, pid = split_ref(parent)
                await flow_scripts.deliver(self.client, QueueKeys(pq, self.keys.prefix), pid,
                                           f"{self.keys.queue}:{field}", kind, payload, self.maxlen)
            else:
                logger.warning("queue %s: dropping an unreadable flow record for %s", self.keys.queue, field)
        except ScriptInputError as exc:
            logger.warning("queue %s: dropping a flow record for %s: %s", self.keys.queue, field, exc)
        if self.between is not None:
            await self.between(field)
        await flow_scripts.ack(self.client, self.keys, field, record)
        self.delivered += 1

    async def _cancel_children(self, refs: list[str]) -> None:
        for ref in refs:
            queue, job_id = split_ref(ref)
            scripts = QueueScripts(self.client, QueueKeys(queue, self.keys.prefix), self.maxlen)
            await scripts.cancel(job_id)  # already ended or gone: nothing to do
