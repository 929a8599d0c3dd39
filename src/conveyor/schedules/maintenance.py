"""Built-in maintenance: trims finished job records per each queue's retention policy, trims old
events, and deletes idempotency keys left pointing at vanished jobs.

Each queue (each partition of a partitioned one) is trimmed at now on the clock of the node that
holds it, the clock that stamped its finish times and event ids: on a Cluster the nodes' clocks
differ, and the scheduler's time is the `{schedules}` node's.

Everything runs in bounded batches (one script call touches at most `batch` records, one XTRIM
removes at most `batch` entries), so Redis is never blocked for more than a few milliseconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from redis.exceptions import ResponseError

from conveyor.errors import ConfigurationError, SpoiledKeyError
from conveyor.partitions import open_queue, parts_of
from conveyor.redis.clock import redis_now_ms
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import redis_call
from conveyor.redis.keys import QueueKeys, registry_key
from conveyor.redis.spoiled import is_wrong_type, spoiled_key_error
from conveyor.schedules.scripts import prune_idempotency, trim_finished

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 200
DEFAULT_EVENTS_MAX_AGE_S = 7 * 86400.0
_EVENTS_TRIM_LIMIT = 1000  # entries per XTRIM call (whole nodes of 100 by default)
_SCAN_COUNT = 1000
# (state set, retention policy); cancelled records follow the completed policy.
_TRIMMED = (("completed", "completed"), ("failed", "failed"), ("cancelled", "completed"))


@dataclass(slots=True)
class MaintenanceReport:
    queues: int = 0
    records_deleted: dict[str, int] = field(default_factory=dict)
    events_trimmed: int = 0
    idempotency_keys_deleted: int = 0
    calls: int = 0
    skipped: list[str] = field(default_factory=list)  # queues with a key of the wrong type (logged)


class Maintenance:
    """One pass over every queue under a prefix. Per queue, meta field `events_max_age_ms` overrides
    the events age limit (`-1` keeps events until the stream's length cap)."""

    def __init__(
        self,
        client: RedisClient,
        prefix: str = "cv",
        *,
        batch: int = DEFAULT_BATCH,
        events_max_age_s: float = DEFAULT_EVENTS_MAX_AGE_S,
    ) -> None:
        if not 1 <= batch <= 1000:
            raise ValueError("batch must be in [1, 1000]")
        self.client = client
        self.prefix = prefix
        self.batch = batch
        self.events_max_age_ms = int(events_max_age_s * 1000)

    async def run(self, now_ms: int | None = None) -> MaintenanceReport:
        """One pass. Each queue (partition) is trimmed at now on its own node's clock; `now_ms`, when
        given, is used for every queue instead (a test's made-up time)."""
        report = MaintenanceReport()
        async for name in self.client.sscan_iter(registry_key(self.prefix), count=100):
            report.queues += 1
            try:
                for part in parts_of(await open_queue(name, redis=self.client, prefix=self.prefix)):
                    now = await redis_now_ms(self.client, part.keys.meta) if now_ms is None else now_ms
                    await self.run_queue(part.keys, now, report)  # a partitioned queue: each partition
            except SpoiledKeyError as exc:  # one queue's hand-edited key must not stop the others' trims
                report.skipped.append(name)
                logger.warning("maintenance: queue %s skipped: %s", name, exc)
        await self._prune_idempotency(report)
        logger.info(
            "maintenance: %d queues, %s records deleted, %d events trimmed, %d idempotency keys deleted",
            report.queues, report.records_deleted, report.events_trimmed, report.idempotency_keys_deleted,
        )
        return report

    async def scheduled_run(self, scheduler_now_ms: int) -> MaintenanceReport:
        """The built-in schedule's run. The scheduler's time is the `{schedules}` node's clock, not
        the queues' nodes': each queue reads its own."""
        return await self.run()

    async def run_queue(self, keys: QueueKeys, now_ms: int, report: MaintenanceReport) -> None:
        """Trim one queue (partition) at `now_ms` on the clock of the node holding `keys`."""
        for state, policy in _TRIMMED:
            more = True
            while more:
                deleted, more = await trim_finished(self.client, keys, state, policy, now_ms, self.batch)
                report.calls += 1
                if deleted:
                    report.records_deleted[keys.queue] = report.records_deleted.get(keys.queue, 0) + deleted
        await self._trim_events(keys, now_ms, report)

    async def _trim_events(self, keys: QueueKeys, now_ms: int, report: MaintenanceReport) -> None:
        try:
            await self._trim_events_of(keys, now_ms, report)
        except ResponseError as exc:
            if is_wrong_type(exc):
                raise await spoiled_key_error(self.client, "maintenance", (keys.meta, keys.events)) from exc
            raise

    async def _trim_events_of(self, keys: QueueKeys, now_ms: int, report: MaintenanceReport) -> None:
        raw = await redis_call(self.client.hget(keys.meta, "events_max_age_ms"))
        max_age = self.events_max_age_ms if raw is None else int(raw)
        if max_age < 0:
            return
        min_id = f"{now_ms - max_age}-0"
        while True:
            # `~` trims whole stream nodes only and LIMIT caps the entries per call: bounded work.
            n = int(await redis_call(
                self.client.xtrim(keys.events, minid=min_id, approximate=True, limit=_EVENTS_TRIM_LIMIT)
            ))
            report.calls += 1
            report.events_trimmed += n
            if n == 0:
                return

    async def _prune_idempotency(self, report: MaintenanceReport) -> None:
        """One SCAN over the keyspace for every queue's idempotency keys, pruned per queue in batches."""
        pending: dict[str, list[str]] = {}
        async for key in self.client.scan_iter(match=f"{self.prefix}:{{*}}:idem:*", count=_SCAN_COUNT):
            queue = key[len(self.prefix) + 2:].split("}", 1)[0]
            batch = pending.setdefault(queue, [])
            batch.append(key)
            if len(batch) >= self.batch:
                await self._prune(queue, batch, report)
                pending[queue] = []
        for queue, batch in pending.items():
            await self._prune(queue, batch, report)

    async def _prune(self, queue: str, batch: list[str], report: MaintenanceReport) -> None:
        if batch:
            name, sep, _ = queue.partition("#")  # a partition's tag: `<queue>#<i>.<n>`
            try:
                keys = QueueKeys(name, self.prefix, queue if sep else "")
            except ConfigurationError:  # a foreign key that merely matched the pattern
                return
            report.idempotency_keys_deleted += await prune_idempotency(self.client, keys, batch)
            report.calls += 1
