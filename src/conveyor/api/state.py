"""What every request handler shares: the Conveyor app, settings, key store and Redis clients."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from fastapi import Request

from conveyor.api.errors import ApiError
from conveyor.api.keys import KeyStore
from conveyor.app import Conveyor
from conveyor.queue import Queue
from conveyor.redis.connection import RedisClient, connect
from conveyor.redis.keys import validate_queue_name
from conveyor.schedules.store import ScheduleStore
from conveyor.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class ApiState:
    """Created by `create_app`; clients connect lazily, so the app also works without lifespan events."""

    conveyor: Conveyor
    settings: Settings
    _keys: KeyStore | None = None
    _schedules: ScheduleStore | None = None
    _blocking: RedisClient | None = None
    _blocking_queues: dict[str, Queue] = field(default_factory=dict)

    @property
    def client(self) -> RedisClient:
        return self.conveyor.client

    @property
    def prefix(self) -> str:
        return self.conveyor.prefix

    @property
    def keys(self) -> KeyStore:
        if self._keys is None:
            self._keys = KeyStore(self.client, self.prefix)
        return self._keys

    @property
    def schedules(self) -> ScheduleStore:
        if self._schedules is None:
            self._schedules = ScheduleStore(self.client, self.prefix)
        return self._schedules

    def queue(self, name: str) -> Queue:
        """A queue the app declares; anything else is a 404 (the API serves only the app's queues)."""
        if name not in self.conveyor.queue_configs:
            raise ApiError(404, f"queue {name!r} is not declared by this app")
        return self.conveyor.queue(name)

    def blocking_queue(self, name: str) -> Queue:
        """The same queue on a connection without socket timeout, for long XREAD BLOCK calls."""
        q = self._blocking_queues.get(name)
        if q is None:
            if self._blocking is None:
                self._blocking = connect(self.conveyor.redis_url, socket_timeout=None)
            validate_queue_name(name)
            q = Queue(name, redis=self._blocking, prefix=self.prefix)
            self._blocking_queues[name] = q
        return q

    async def close(self) -> None:
        if self._blocking is not None:
            await self._blocking.aclose()
            self._blocking = None
        self._blocking_queues.clear()


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.conveyor_api
    return state
