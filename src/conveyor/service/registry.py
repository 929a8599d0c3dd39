"""Worker registry: each process keeps a heartbeat record in Redis that expires when it dies.

Keys come from `WorkerRegistryKeys` (shared with the HTTP API): `index` is a zset of worker ids scored
by last beat (ms), `worker(id)` a JSON string with a PX TTL of three beat intervals. Each record
carries `clock_offset_ms`, this process's clock minus the clock of the node holding the registry
(one node on a Cluster too), measured at every beat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from conveyor import codec
from conveyor.errors import ConnectionFailedError
from conveyor.redis.clock import clock_offset_ms
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import guarded
from conveyor.redis.keys import WorkerRegistryKeys, registry_key
from conveyor.views import list_workers  # the reader, shared with the API and the CLI

logger = logging.getLogger(__name__)
TTL_BEATS = 3


class RegistryWriter:
    """Writes this process's record every beat; `record()` supplies the current contents."""

    def __init__(
        self,
        client: RedisClient,
        prefix: str,
        worker_id: str,
        record: Callable[[], dict[str, Any]],
        interval_s: float,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.keys = WorkerRegistryKeys(prefix)
        self.worker_id = worker_id
        self.record = record
        self.ttl_ms = max(1, int(interval_s * 1000 * TTL_BEATS))

    async def beat(self) -> None:
        try:
            # Against the node holding the registry, as every worker and `conveyor doctor` measure it.
            offset = await clock_offset_ms(self.client, self.keys.index)
            now_ms = int(time.time() * 1000)
            record = {**self.record(), "last_beat_ms": now_ms, "clock_offset_ms": offset}
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.worker(self.worker_id), codec.dumps(record).decode(), px=self.ttl_ms)
                pipe.zadd(self.keys.index, {self.worker_id: now_ms})
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ConnectionFailedError(f"registry heartbeat failed: {exc}") from exc

    async def register_queues(self, names: list[str]) -> None:
        """Add the service's queues to the set of known queue names (what tools list)."""
        await guarded(self.client.sadd(registry_key(self.prefix), *names), "registering queue names")

    async def remove(self) -> None:
        """Drop the record at a clean shutdown, so listings update at once."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(self.keys.worker(self.worker_id))
                pipe.zrem(self.keys.index, self.worker_id)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            logger.warning("could not remove the registry record (%s); it expires by itself", exc)


__all__ = ["TTL_BEATS", "RegistryWriter", "list_workers"]
