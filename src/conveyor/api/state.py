"""What every request handler shares: the Conveyor app, settings, key store and Redis clients."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from fastapi import Request

from conveyor.api.errors import ApiError
from conveyor.api.hub import EventHub
from conveyor.api.keycache import KeyCache
from conveyor.api.keys import KeyStore
from conveyor.api.slots import Slots
from conveyor.app import Conveyor
from conveyor.errors import ConfigurationError
from conveyor.partitions import open_queue
from conveyor.queue import Queue
from conveyor.redis.connection import RedisClient, connect
from conveyor.redis.faults import redis_call
from conveyor.redis.keys import registry_key, validate_queue_name
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
    _hub: EventHub | None = None
    streams: Slots = field(init=False)
    waits: Slots = field(init=False)
    key_cache: KeyCache = field(init=False)
    # Set by `conveyor api`: SIGINT/SIGTERM drain the hub before uvicorn's shutdown (api/drain.py).
    drain_on_exit_signals: bool = False

    def __post_init__(self) -> None:
        self.key_cache = KeyCache(self.settings.api_key_cache_s)
        self.streams = Slots("event streams", self.settings.api_max_streams_per_key)
        self.waits = Slots("long-polls", self.settings.api_max_waits_per_key)

    @property
    def hub(self) -> EventHub:
        """The process's one reader of queue events (SSE and long-polls subscribe to it)."""
        if self._hub is None:
            self._hub = EventHub(lambda: self.client, self._blocking_client, self.prefix,
                                 buffer_bytes=self.settings.api_sse_buffer_bytes)
        return self._hub

    def _blocking_client(self) -> RedisClient:
        # XREAD BLOCK waits up to the hub's block time; the socket timeout only catches a dead peer.
        if self._blocking is None:
            self._blocking = connect(self.conveyor.redis_url, socket_timeout=self.hub.block_ms / 1000 + 10)
        return self._blocking

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

    async def existing_queue(self, name: str) -> Queue:
        """A queue the app declares, or any other queue that exists in Redis (the queue registry lists
        every queue ever written to): reading and operating work on both; anything else is a 404."""
        if name in self.conveyor.queue_configs:
            return self.conveyor.queue(name)
        try:
            validate_queue_name(name)
        except ConfigurationError:
            raise ApiError(404, "no such queue") from None
        if not await redis_call(self.client.sismember(registry_key(self.prefix), name)):
            raise ApiError(404, f"queue {name!r} does not exist")
        return await self.opened(name)

    async def opened(self, name: str) -> Queue:
        """The app's handle of a declared queue; any other as Redis records it (a partitioned queue
        over all its partitions, conveyor.partitions.open_queue). `name` must be valid."""
        if name in self.conveyor.queue_configs:
            return self.conveyor.queue(name)
        return await open_queue(name, redis=self.client, prefix=self.prefix)

    async def close(self) -> None:
        if self._hub is not None:
            await self._hub.close()
            self._hub = None
        if self._blocking is not None:
            await self._blocking.aclose()
            self._blocking = None


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.conveyor_api
    return state
