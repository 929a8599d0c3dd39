"""What alert rules read, fetched once per evaluation pass and shared by the rules of a pass.

A time compared with a queue's keys (the oldest waiting job's age, jobs finished in a window, stalled
events' ids) is read from the clock of the node holding that queue (each partition's, for a
partitioned queue), the clock that stamped them: on a Cluster the nodes' clocks differ, and the
pass's own time is the clock of the alert state's node.
"""

from __future__ import annotations

from typing import Any

from conveyor.autoscaling.signals import oldest_waiting_ms
from conveyor.limits import admin as limits_admin
from conveyor.partitions import PartitionedQueue, open_queue, parts_of
from conveyor.queue import Queue
from conveyor.redis.clock import redis_now_ms
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import redis_call

EVENTS_CHUNK = 1000
EVENTS_SCAN_MAX = 20_000  # stream entries read per queue and pass for the stalled count


class Probe:
    """Reads of one pass, cached by queue. `now_ms`, when given, is the time of every comparison (a
    test's made-up time); by default each queue's are made at now on its own node's clock."""

    def __init__(self, client: RedisClient, prefix: str, now_ms: int | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.now_ms = now_ms
        self._queues: dict[str, Queue] = {}
        self._cache: dict[tuple[Any, ...], Any] = {}

    async def opened(self, name: str) -> Queue:
        """The queue as Redis records it (a partitioned one over all its partitions), once per pass."""
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = await open_queue(name, redis=self.client, prefix=self.prefix)
        return q

    async def now_ms_of(self, part: Queue) -> int:
        """Now for comparisons with one queue's (partition's) keys: `now_ms`, or its node's clock,
        read once per pass."""
        if self.now_ms is not None:
            return self.now_ms
        now: int = await self._once(("now", part.keys.base), lambda: redis_now_ms(self.client, part.keys.meta))
        return now

    async def _once(self, key: tuple[Any, ...], make: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = await make()
        return self._cache[key]

    async def counts(self, queue: str) -> dict[str, int]:
        counts = await self._once(("counts", queue), (await self.opened(queue)).counts)
        return {str(s): n for s, n in counts.items()}

    async def oldest_waiting_ms(self, queue: str) -> int | None:
        result: int | None = await self._once(
            ("oldest", queue), lambda: self._oldest(queue)
        )
        return result

    async def _oldest(self, queue: str) -> int | None:
        return await oldest_waiting_ms(await self.opened(queue), self.now_ms)  # None: each partition's clock

    async def group_state(self, queue: str, group: str) -> dict[str, Any]:
        """One group's limits and backlog (limits_admin.group_state), once per pass."""
        state: dict[str, Any] = await self._once(("group", queue, group), lambda: self._group_state(queue, group))
        return state

    async def _group_state(self, queue: str, group: str) -> dict[str, Any]:
        """A group lives in one partition per layout; during a re-partition its older jobs (and
        the limiter they spend) are in the previous layout's partition, so every home is read."""
        q = await self.opened(queue)
        homes = q.group_homes(group) if isinstance(q, PartitionedQueue) else [q]
        return merge_group_states([await limits_admin.group_state(part, group) for part in homes])

    async def limits(self, queue: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._once(("limits", queue), (await self.opened(queue)).limits_state)
        return result

    async def limiter(self, queue: str, group: str | None, name: str) -> dict[str, Any] | None:
        """The `rate` or `cost` limiter state of the queue, or of one of its groups."""
        if group is None:
            return (await self.limits(queue)).get(name)
        state = await self.group_state(queue, group)
        value: dict[str, Any] | None = state.get(name)
        return value

    async def budget(self, group: str) -> dict[str, Any] | None:
        """A tenant's budget and this period's spend (conveyor.costs), or None without a budget."""
        from conveyor.costs import CostLedger

        rows: list[dict[str, Any]] = await self._once(
            ("budget", group), lambda: CostLedger(self.client, self.prefix).budgets([group]))
        return rows[0] if rows else None

    async def finished(self, queue: str, window_s: float) -> tuple[int, int]:
        """Jobs completed and failed in the last `window_s`, by finish time."""
        async def count() -> tuple[int, int]:
            parts = parts_of(await self.opened(queue))
            nows = [await self.now_ms_of(part) for part in parts]
            async with self.client.pipeline(transaction=False) as pipe:
                for part, now in zip(parts, nows, strict=True):
                    since = now - int(window_s * 1000)
                    pipe.zcount(part.keys.completed, since, "+inf")
                    pipe.zcount(part.keys.failed, since, "+inf")
                replies = [int(n) for n in await redis_call(pipe.execute())]
            return sum(replies[0::2]), sum(replies[1::2])

        result: tuple[int, int] = await self._once(("finished", queue, window_s), count)
        return result

    async def stalled(self, queue: str, window_s: float) -> tuple[int, bool]:
        """Stalled events in the last `window_s`, read newest first; (count, complete) where complete
        is False when the scan stopped at EVENTS_SCAN_MAX entries (the count is then a lower bound)."""
        async def count() -> tuple[int, bool]:
            n, scanned = 0, 0
            for part in parts_of(await self.opened(queue)):  # the scan bound is shared by the partitions
                since = f"{await self.now_ms_of(part) - int(window_s * 1000)}-0"
                upper = "+"
                while True:
                    if scanned >= EVENTS_SCAN_MAX:
                        return n, False
                    entries = await redis_call(
                        self.client.xrevrange(part.keys.events, upper, since, count=EVENTS_CHUNK))
                    scanned += len(entries)
                    n += sum(1 for _, fields in entries if (fields or {}).get("ev") == "stalled"
                             or (fields or {}).get("error") == "stalled too often")
                    if len(entries) < EVENTS_CHUNK:
                        break
                    upper = f"({entries[-1][0]}"
            return n, True

        result: tuple[int, bool] = await self._once(("stalled", queue, window_s), count)
        return result

    async def workers_serving(self, queue: str) -> int:
        # The registry is the worker service's; read through its public function.
        from conveyor.service.registry import list_workers

        workers = await self._once(("workers",), lambda: list_workers(self.client, self.prefix))
        return sum(1 for w in workers if queue in (w.get("queues") or ()))




def merge_group_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """One group's state over its homes in every layout (the current one first): backlogs and
    active counts summed, the latest block, and for each limiter the home with the fewest tokens
    (each layout's home enforces the group's limits on its own, so the emptiest one holds jobs back)."""
    merged = dict(states[0])
    merged["waiting"] = sum(int(s["waiting"]) for s in states)
    merged["active"] = sum(int(s["active"]) for s in states)
    blocked = [s["blocked_until_ms"] for s in states if s["blocked_until_ms"] is not None]
    merged["blocked_until_ms"] = max(blocked) if blocked else None
    for name in ("rate", "cost"):
        limiters = [s[name] for s in states if s.get(name) is not None]
        merged[name] = min(limiters, key=lambda lim: float(lim["tokens"])) if limiters else None
    return merged
