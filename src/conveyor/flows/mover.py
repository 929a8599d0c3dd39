"""The mover: delivers a queue's outbox records to the parents' slots (docs/flows.md, "The hand-over").

Each record was written by the script that ended a child, in the child's slot. Delivery is one
idempotent script in the parent's slot (a child is counted at most once; the records of one parent
go in one call), and the records are deleted only after it, so a process killed anywhere in between
leaves them to be delivered again. Every worker of a queue runs one; two movers delivering the same
record is harmless.
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

SCAN_COUNT = 1000
PARALLEL = 32  # parents delivered to at once
PER_CALL = 1000  # children per delivery call


class OutboxMover:
    """Drains the outbox of one queue; `kick` wakes it early (the worker sets it after recording the
    end of a flow job), else it looks every `interval_s`."""

    def __init__(self, client: RedisClient, keys: QueueKeys, events_maxlen: int, interval_s: float | None) -> None:
        """`interval_s=None`: look only when kicked (a worker sharing a pacer kicks it on its paced
        turns, so 1,000 idle queues do not each scan their outbox every few seconds)."""
        self.client = client
        self.keys = keys
        self.maxlen = events_maxlen
        self.interval_s = interval_s
        self.kick = asyncio.Event()
        self.delivered = 0
        # A hook for tests of crash safety: awaited between a delivery and the deletion of its records.
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
                async with asyncio.timeout(self.interval_s):  # None: no timeout
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
            groups: dict[str, list[tuple[str, str]]] = {}
            for field, record in batch.items():
                kind, _, rest = record.partition("|")
                groups.setdefault(rest.partition("|")[0] if kind in ("C", "F") else "!" + field, []).append(
                    (field, record))
            items = list(groups.items())
            for start in range(0, len(items), PARALLEL):
                chunk = items[start:start + PARALLEL]
                await asyncio.gather(*(self.deliver(parent, records) for parent, records in chunk))
            total += len(batch)
            if not cursor:
                return total

    async def deliver(self, parent: str, records: list[tuple[str, str]]) -> None:
        """Deliver the records of one parent (or one cancellation), then delete them."""
        for start in range(0, len(records), PER_CALL):
            part = records[start:start + PER_CALL]
            try:
                if parent.startswith("!"):
                    for _, record in part:
                        await self._cancel_children(record.split("|", 2)[2].split())
                elif parent:
                    pq, pid = split_ref(parent)
                    items = [(f"{self.keys.queue}:{field}", record[0], record.split("|", 2)[2])
                             for field, record in part]
                    await flow_scripts.deliver(self.client, QueueKeys(pq, self.keys.prefix), pid, items, self.maxlen)
                else:
                    logger.warning("queue %s: dropping %d unreadable flow record(s)", self.keys.queue, len(part))
            except ScriptInputError as exc:
                logger.warning("queue %s: dropping flow records for %s: %s", self.keys.queue, parent, exc)
            if self.between is not None:
                await self.between(part[0][0])
            await flow_scripts.ack(self.client, self.keys, part)
            self.delivered += len(part)

    async def _cancel_children(self, refs: list[str]) -> None:
        for ref in refs:
            queue, job_id = split_ref(ref)
            scripts = QueueScripts(self.client, QueueKeys(queue, self.keys.prefix), self.maxlen)
            await scripts.cancel(job_id)  # already ended or gone: nothing to do
