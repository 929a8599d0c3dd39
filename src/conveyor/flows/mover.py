"""The mover: delivers a queue's outbox records to the parents' slots (docs/flows.md, "The hand-over").

Each record was written by the script that ended a child, in the child's slot. Delivery is one
idempotent script in the parent's slot (a child is counted at most once; the records of one parent
go in one call), and the records are deleted only after it, so a process killed anywhere in between
leaves them to be delivered again. Every worker of a queue runs one; two movers delivering the same
record is harmless. A record that cannot be delivered (edited by hand or written by another client)
is set aside in <p>outbox-bad, logged once and counted, while the other records of its batch are
delivered; the move is one script, and one whose reply was lost is confirmed on the next pass, so
the record is logged and counted once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ResponseError

from conveyor import codec
from conveyor.errors import ConfigurationError, ConnectionFailedError, ScriptInputError, SpoiledKeyError
from conveyor.job import split_ref
from conveyor.redis import flow_scripts
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import guarded
from conveyor.redis.keys import QueueKeys, validate_queue_name
from conveyor.redis.scripts import QueueScripts

logger = logging.getLogger(__name__)

SCAN_COUNT = 1000
PARALLEL = 32  # parents delivered to at once
PER_CALL = 1000  # children per delivery call
CANCEL_BATCH = 500  # children of a cancelled parent cancelled per script call (bounded work)
MAX_SET_ASIDE = 1000  # records kept in <p>outbox-bad (beyond it they are only logged and counted)


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
        self.set_aside = 0  # records that could not be delivered (see `_set_aside`)
        # Records of a set-aside call whose reply was lost: field -> (record, why), settled next pass.
        self._unconfirmed: dict[str, tuple[str, str]] = {}
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
        await self._confirm_set_aside()
        total, cursor = 0, 0
        while True:
            reply: Any = await guarded(
                self.client.hscan(self.keys.outbox, cursor, count=SCAN_COUNT), "reading the flow outbox")
            cursor, batch = reply
            groups: dict[str, list[tuple[str, str]]] = {}
            unreadable: list[tuple[str, str]] = []
            for field, record in batch.items():
                parent = _parent_of(field, record)
                if parent is None:
                    unreadable.append((field, record))
                else:
                    groups.setdefault(parent, []).append((field, record))
            if unreadable:
                await self._set_aside([(field, record, "not a flow record") for field, record in unreadable])
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
            if parent.startswith("!"):
                for _, record in part:
                    _, run, refs = record.split("|", 2)
                    await self._cancel_children(refs.split(), run[:40])
            else:
                await self._deliver_part(parent, part)
            if self.between is not None:
                await self.between(part[0][0])
            await flow_scripts.ack(self.client, self.keys, part)
            self.delivered += len(part)

    async def _deliver_part(self, parent: str, part: list[tuple[str, str]]) -> None:
        """One delivery call; a record the script refuses (its outcome is not JSON) is set aside and
        the call made again without it, so its siblings are still delivered (the script writes
        nothing when it refuses; records that are not JSON were set aside before, so this is rare).
        A parent key that is not a job's record (another type, or a hash without a job's state) sets
        its records aside, and so does a record whose child is not among the parent's children (the
        script counts nothing for it)."""
        pq, pid = split_ref(parent)
        keys = QueueKeys(pq, self.keys.prefix)
        left = list(part)
        while left:
            items = [(f"{self.keys.queue}:{field}", record[0], record.split("|", 2)[2]) for field, record in left]
            try:
                answers = await flow_scripts.deliver(self.client, keys, pid, items, self.maxlen)
            except (ResponseError, SpoiledKeyError) as exc:  # faults are ConnectionFailedError: the parent's key
                await self._set_aside([(field, record, f"the parent's record cannot be used: {exc}")
                                       for field, record in left])
                return
            except ScriptInputError as exc:
                if not 1 <= exc.position <= len(left):  # the call itself, not one record: all of them
                    await self._set_aside([(field, record, str(exc)) for field, record in left])
                    return
                field, record = left.pop(exc.position - 1)
                await self._set_aside([(field, record, str(exc))])
                continue
            strangers = [(field, record, f"{parent[:200]} has no such child")
                         for (field, record), answer in zip(left, answers, strict=True)
                         if answer == flow_scripts.NOT_A_CHILD]
            if strangers:
                await self._set_aside(strangers)
            return

    async def _set_aside(self, records: list[tuple[str, str, str]]) -> None:
        """Move records that cannot be delivered (field, record, why) from the outbox to <p>outbox-bad
        (bounded) in one script, so they are never tried again, and log and count each once. When
        the reply is lost, the records are kept until the next pass settles them
        (`_confirm_set_aside`): the move may have run, and the outbox no longer shows them."""
        try:
            answers = await flow_scripts.set_aside(
                self.client, self.keys, [(field, record) for field, record, _ in records], MAX_SET_ASIDE)
        except ConnectionFailedError:
            for field, record, why in records:
                self._unconfirmed[field] = (record, why)
            raise
        for (field, _, why), answer in zip(records, answers, strict=True):
            if answer == flow_scripts.SET_ASIDE_NOW:  # else delivered, replaced or set aside meanwhile
                self._note_set_aside(field, why)

    async def _confirm_set_aside(self) -> None:
        """Settle the records of a set-aside call whose reply was lost: moved by that call (or moved
        now) they are logged and counted, once; delivered or replaced meanwhile, nothing is."""
        if not self._unconfirmed:
            return
        items = list(self._unconfirmed.items())
        answers = await flow_scripts.set_aside(
            self.client, self.keys, [(field, record) for field, (record, _) in items], MAX_SET_ASIDE)
        for (field, (_, why)), answer in zip(items, answers, strict=True):
            self._unconfirmed.pop(field, None)
            if answer in (flow_scripts.SET_ASIDE_NOW, flow_scripts.SET_ASIDE_BEFORE):
                self._note_set_aside(field, why)

    def _note_set_aside(self, field: str, why: str) -> None:
        """Count and log a record set aside; not its content (it may hold a job's result)."""
        self.set_aside += 1
        logger.warning("queue %s: flow record %r cannot be delivered (%s); set aside in %s",
                       self.keys.queue, field[:200], why[:200], self.keys.outbox_rejects)

    async def _cancel_children(self, refs: list[str], run: str) -> None:
        """Cancel the children of a parent that ended cancelled or was removed; `run` (the parent's
        creation stamp) marks them as cancelled with that run of it (includes/flow.lua). Children on
        one queue (one slot) go in one script call per CANCEL_BATCH, so a fan-out of 10,000 costs a
        few dozen round trips, not 10,000. Each child's cancellation is idempotent, so a call whose
        reply was lost (the record stays in the outbox) is made again on the next pass harmlessly."""
        by_queue: dict[str, list[str]] = {}
        for ref in refs:
            queue, job_id = split_ref(ref)
            by_queue.setdefault(queue, []).append(job_id)
        for queue, ids in by_queue.items():
            try:
                keys = QueueKeys(queue, self.keys.prefix)
            except ConfigurationError:
                logger.warning("queue %s: skipping %d child reference(s) of a cancelled parent: no such queue %r",
                               self.keys.queue, len(ids), queue[:200])
                continue
            for start in range(0, len(ids), CANCEL_BATCH):
                await self._cancel_batch(keys, ids[start:start + CANCEL_BATCH], run)

    async def _cancel_batch(self, keys: QueueKeys, ids: list[str], run: str) -> None:
        """One call for children of one queue; a child whose key is not a job's record is skipped with a
        warning. A call refused by the server (a key of the queue itself spoiled) is made again child by
        child, so only the children it concerns are skipped."""
        try:
            answers = await flow_scripts.cancel_kids(self.client, keys, ids, run, self.maxlen)
        except (ResponseError, SpoiledKeyError, ScriptInputError) as exc:  # faults are ConnectionFailedError
            logger.warning("queue %s: cancelling %d children on %s one by one (%s)",
                           self.keys.queue, len(ids), keys.queue, str(exc)[:200])
            await self._cancel_one_by_one(keys, ids, run)
            return
        for job_id, answer in zip(ids, answers, strict=True):
            if answer == flow_scripts.NOT_A_JOB:
                logger.warning("queue %s: skipping the child %r of a cancelled parent: its key is not a job's record",
                               self.keys.queue, f"{keys.queue}:{job_id}"[:200])

    async def _cancel_one_by_one(self, keys: QueueKeys, ids: list[str], run: str) -> None:
        scripts = QueueScripts(self.client, keys, self.maxlen)
        for job_id in ids:
            try:
                await scripts.cancel(job_id, run)  # already ended or gone: nothing to do
            except (ResponseError, SpoiledKeyError) as exc:
                logger.warning("queue %s: skipping the child %r of a cancelled parent: its record cannot be used (%s)",
                               self.keys.queue, f"{keys.queue}:{job_id}"[:200], str(exc)[:200])


def _parent_of(field: str, record: str) -> str | None:
    """The group of a record: its parent's reference ("<queue>:<id>"), or "!<parent id>" for a
    cancellation of a parent's children; None when it cannot be delivered (no such kind, a parent
    reference naming no queue, an outcome that is not JSON)."""
    kind, _, rest = record.partition("|")
    if kind in ("C", "F"):
        parent, sep, _ = rest.partition("|")
        queue, _, job_id = parent.partition(":")
        return parent if sep and job_id and _is_queue_name(queue) and _is_json(rest.partition("|")[2]) else None
    if kind == "K" and field.startswith("!") and "|" in rest:
        return "!" + field
    return None


def _is_queue_name(name: str) -> bool:
    try:
        validate_queue_name(name)
    except ConfigurationError:
        return False
    return True


def _is_json(payload: str) -> bool:
    """The delivery script decodes each outcome and refuses the whole call on one it cannot read."""
    try:
        codec.loads(payload)
    except ValueError:
        return False
    return True
