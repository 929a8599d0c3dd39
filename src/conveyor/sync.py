"""Enqueue without an event loop: for Django and Flask views, management commands and scripts.

`SyncQueue` uses redis-py's synchronous client and the same validation, encoding and add script as
`Queue`, so options, errors (`conveyor.errors`) and stored jobs are identical; a task declared on a
`Conveyor` app enqueues with `task.enqueue_sync(payload, **options)`. Thread-safe (one connection pool).
Async middleware hooks (`before_enqueue`/`after_enqueue`) need a loop and are not called here;
`Middleware.propagate` (trace context) is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.errors import InvalidOptionError
from conveyor.job import JobRecord
from conveyor.middleware import Middleware
from conveyor.options import JobOptions, JobSpec
from conveyor.queue import (
    BULK_CHUNK,
    DEFAULT_EVENTS_MAXLEN,
    DEFAULT_MAX_PAYLOAD_BYTES,
    QueueHandle,
    added_jobs,
    check_batch_duplicates,
    encode_spec,
)
from conveyor.redis.connection import SyncRedisClient, connect_sync
from conveyor.redis.durability import Durability
from conveyor.redis.faults import guarded_sync
from conveyor.redis.keys import QueueKeys, registry_key
from conveyor.redis.scripts import add_sync

__all__ = ["Enqueued", "SyncQueue"]


@dataclass(frozen=True, slots=True)
class Enqueued:
    """A stored job: its id, its queue, and whether this call created it (False for an idempotent repeat)."""

    id: str
    queue: str
    created: bool = True


class SyncQueue(QueueHandle[SyncRedisClient]):
    """The enqueue side of a `Queue`, synchronous. Share one client between queues (`redis=client`)."""

    def __init__(
        self,
        name: str,
        *,
        redis: str | SyncRedisClient | None = None,
        prefix: str = "cv",
        defaults: JobOptions | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        events_maxlen: int = DEFAULT_EVENTS_MAXLEN,
        middleware: Sequence[Middleware] = (),
        durability: Durability | None = None,
    ) -> None:
        self._set_up(
            QueueKeys(name, prefix), redis, connect_sync, defaults, max_payload_bytes, events_maxlen, middleware,
            durability,
        )

    def __repr__(self) -> str:
        return f"SyncQueue({self.name!r})"

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> SyncQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, name: str, data: Any = None, **options: Any) -> Enqueued:
        """Enqueue one job with the keyword options of `Queue.add` (job_id, idempotency_key, priority,
        delay, run_at, attempts, backoff, timeout, ...); same validation, same errors."""
        return self.add_specs([JobSpec(name, data, job_options(options))])[0]

    def add_bulk(self, specs: Iterable[JobSpec | Mapping[str, Any]]) -> list[Enqueued]:
        """Enqueue many jobs; each chunk of up to 1,000 is written atomically, all validated first."""
        return self.add_specs([s if isinstance(s, JobSpec) else JobSpec.from_mapping(s) for s in specs])

    def add_specs(self, specs: Sequence[JobSpec]) -> list[Enqueued]:
        encoded = [
            encode_spec(self.name, spec, self.defaults, self.max_payload_bytes, self.middleware) for spec in specs
        ]
        check_batch_duplicates(encoded)
        self._register()
        out: list[Enqueued] = []
        for start in range(0, len(encoded), BULK_CHUNK):
            reply = add_sync(
                self.client, self.keys, self.events_maxlen, encoded[start:start + BULK_CHUNK], self.durability
            )
            out += [Enqueued(job_id, self.name, created) for job_id, created in added_jobs(reply)]
        return out

    def get_job(self, job_id: str) -> JobRecord | None:
        """The job's record now (None if unknown or removed)."""
        h = self._call(self.client.hgetall, self.keys.job(job_id))
        return JobRecord.from_hash(self.name, job_id, h) if h else None

    def _register(self) -> None:
        if not self._registered:
            self._call(self.client.sadd, registry_key(self.prefix), self.name)
            self._registered = True

    @staticmethod
    def _call(fn: Any, *args: Any) -> Any:
        """One Redis call; every fault comes out as ConnectionFailedError (redis/faults.py)."""
        return guarded_sync(fn, *args)


def job_options(options: Mapping[str, Any]) -> JobOptions:
    """Keyword options as `JobOptions`; an unknown name is an InvalidOptionError, as for `Task.enqueue`."""
    try:
        return JobOptions(**options)
    except TypeError as exc:
        raise InvalidOptionError(str(exc)) from None
