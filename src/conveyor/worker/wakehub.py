"""One blocking wait for the wake lists of many idle queues of a process (docs/scaling.md).

A queue's idle worker used to hold its own connection in `BLPOP <queue>:wake`; a process serving
1,000 queues held 1,000 connections. The hub instead waits for all the queues that are idle right
now with at most `groups` `BLPOP` calls, each over the wake lists of its share of the queues (on a
Cluster, one per hash slot: a multi-key command stays in one slot). A marker ends only its group's
wait, so the next one re-sends a share of the keys, not all of them. When a marker arrives, the hub
hands it to the waiting worker of that queue. A queue that becomes idle while its group waits
interrupts the wait with a marker on the hub's own list, so the next `BLPOP` covers it; a queue that
stops waiting simply drops out of the next one (a marker popped for it meanwhile is put back, so
another process can have it).

Waiting has a safety net: a marker can be lost with a worker that died holding it, so an idle queue
is probed now and then anyway. A worker of its own probes after every `timeout` without a marker
(as before); workers sharing a hub probe on the turns a `Pacer` gives their stalled sweeps, so the
probes of many idle queues cost a bounded number of calls per second.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from conveyor.cancelling import cancel_and_wait
from conveyor.errors import ConnectionFailedError
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import guarded
from conveyor.redis.spoiled import is_wrong_type, replace_spoiled_lists

logger = logging.getLogger(__name__)

HUB_GROUPS = 16  # most waits (connections) of one process on a standalone server or Sentinel
HUB_BLOCK_S = 5.0  # longest one BLPOP blocks; bounds how long a queue that stopped waiting stays in it
INTERRUPT_TTL_MS = 60_000  # an interrupt marker nobody popped (its hub died) expires
_FAULT_FIRST_S = 0.05
_FAULT_MAX_S = 1.0


class Pacer:
    """Spreads periodic per-queue calls of idle queues (safety-net probes, stalled sweeps, samples)
    over time: at most `rate_per_s` turns per second for the whole process, first come first
    served. `rate_per_s=None` never waits (a process with one queue)."""

    def __init__(self, rate_per_s: float | None = None) -> None:
        if rate_per_s is not None and not rate_per_s > 0:
            raise ValueError("rate_per_s must be > 0")
        self.interval_s = 0.0 if rate_per_s is None else 1.0 / rate_per_s
        self.limited = rate_per_s is not None
        self._next = 0.0
        self.turns = 0

    async def turn(self) -> None:
        """Wait for this caller's turn (cancelling gives the turn up)."""
        if self.interval_s:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval_s
            if slot > now:
                await asyncio.sleep(slot - now)
        self.turns += 1


@dataclass(eq=False, slots=True)
class _Group:
    """The idle queues whose wake lists one BLPOP can cover (all of them, or one Cluster slot)."""

    interrupt_key: str
    # per wake key, its waiters: the future the waiting task awaits, and what to call at once on a marker
    waiters: dict[str, deque[tuple[asyncio.Future[None], Callable[[], None] | None]]] = field(default_factory=dict)
    timeouts: dict[str, float] = field(default_factory=dict)  # the shortest wait asked for, per key
    blocking: frozenset[str] = frozenset()  # wake keys of the BLPOP in flight
    interrupting: bool = False
    task: asyncio.Task[None] | None = None


class WakeHub:
    """Shared by the workers of one process over one client; see the module docstring."""

    def __init__(self, client: RedisClient, *, block_s: float = HUB_BLOCK_S, groups: int = HUB_GROUPS) -> None:
        """`groups`: how many waits at most (standalone and Sentinel); keep it well below the
        client's connection bound, as each wait holds a connection."""
        self.client = client
        self.groups = max(1, groups)
        self.id = secrets.token_hex(6)
        self.block_s = block_s
        self._cluster = isinstance(client, RedisCluster)
        self._groups: dict[int, _Group] = {}
        self._closed = False
        self.waits = 0  # BLPOP calls sent
        self.interrupts = 0  # waits cut short so a newly idle queue joins
        self.returned = 0  # markers popped for a queue that had stopped waiting, put back

    # ------------------------------------------------------------------ for workers

    async def wait(self, wake_key: str, interrupt_key: str, timeout: float | None,
                   on_wake: Callable[[], None] | None = None) -> bool:
        """Until a marker for `wake_key` arrives (True) or `timeout` passed (False; None: no
        timeout, so 1,000 idle queues set no timers). `interrupt_key` must share `wake_key`'s slot.
        `on_wake` is called as the marker is handed over, before this wait's task resumes: a worker
        starts its claim from there, a few event-loop turns earlier."""
        future = self._watch(wake_key, interrupt_key, self.block_s if timeout is None else timeout, on_wake)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(future)
            return True
        except TimeoutError:
            return future.done() and not future.cancelled()
        finally:
            self._unwatch(wake_key, future)

    @property
    def watched(self) -> int:
        """Queues waiting now."""
        return sum(len(g.waiters) for g in self._groups.values())

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait([g.task for g in self._groups.values() if g.task is not None], timeout=5)
        for group in self._groups.values():
            for futures in group.waiters.values():
                for f, _ in futures:
                    f.cancel()
        self._groups.clear()

    # ------------------------------------------------------------------ internals

    def _slot(self, key: str) -> int:
        """The group of a wake list: its Cluster slot, or one of HUB_GROUPS buckets elsewhere (a
        marker ends the wait of its group only, so each new wait re-sends 1/HUB_GROUPS of the keys)."""
        if self._cluster:
            return key_slot(key.encode())
        return zlib.crc32(key.encode()) % self.groups

    def _watch(self, wake_key: str, interrupt_key: str, timeout: float,
               on_wake: Callable[[], None] | None) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            return future
        slot = self._slot(wake_key)
        group = self._groups.get(slot)
        if group is None:
            group = self._groups[slot] = _Group(interrupt_key)
        group.waiters.setdefault(wake_key, deque()).append((future, on_wake))
        group.timeouts[wake_key] = min(timeout, group.timeouts.get(wake_key, timeout))
        if group.task is None:
            group.task = asyncio.get_running_loop().create_task(self._serve(group), name="conveyor-wake-hub")
        elif wake_key not in group.blocking and group.blocking and not group.interrupting:
            group.interrupting = True
            self.interrupts += 1
            asyncio.get_running_loop().create_task(self._interrupt(group))
        return future

    def _unwatch(self, wake_key: str, future: asyncio.Future[None]) -> None:
        group = self._groups.get(self._slot(wake_key))
        if group is None:
            return
        futures = group.waiters.get(wake_key)
        if futures is None:
            return
        for entry in futures:
            if entry[0] is future:
                futures.remove(entry)
                break
        if not futures:
            del group.waiters[wake_key]
            group.timeouts.pop(wake_key, None)

    async def _interrupt(self, group: _Group) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.lpush(group.interrupt_key, "1")
                pipe.pexpire(group.interrupt_key, INTERRUPT_TTL_MS)
                await guarded(pipe.execute(), "interrupting the wake-up wait")
        except ConnectionFailedError as exc:  # the BLPOP meets the same fault and starts over
            logger.debug("wake hub: interrupt failed (%s)", exc)

    async def _serve(self, group: _Group) -> None:
        failures = 0
        try:
            while group.waiters and not self._closed:
                keys = list(group.waiters)
                # As long as the shortest wait asked for: a worker's safety-net probe and the end
                # of a wait then come together, one BLPOP per probe.
                block_s = max(0.01, min(self.block_s, *(group.timeouts.get(k, self.block_s) for k in keys)))
                group.blocking = frozenset(keys)
                group.interrupting = False
                self.waits += 1
                try:
                    reply = await guarded(
                        self.client.blpop([group.interrupt_key, *keys], timeout=block_s), "waiting for work"
                    )
                    failures = 0
                except Exception as exc:
                    if isinstance(exc, ResponseError) and is_wrong_type(exc) and await self._replaced(group, keys):
                        continue
                    # Whatever the error, the wait goes on after a pause: a serving task that died
                    # would leave its idle queues waiting for markers nobody pops (a fault is
                    # expected; anything else is logged in full once per streak).
                    failures += 1
                    delay = min(_FAULT_MAX_S, _FAULT_FIRST_S * 2 ** min(failures, 10))
                    if isinstance(exc, ConnectionFailedError):
                        logger.warning("wake-up wait failed (%s); retrying in %.2fs", exc, delay)
                    elif failures == 1:
                        logger.exception("wake-up wait failed unexpectedly; retrying")
                    group.blocking = frozenset()
                    await asyncio.sleep(delay)
                    continue
                finally:
                    group.blocking = frozenset()
                if reply:
                    await self._deliver(group, str(reply[0]))
        finally:
            group.task = None

    async def _replaced(self, group: _Group, keys: list[str]) -> bool:
        """One of the group's lists edited into another type (they hold only markers): replaced, or
        the BLPOP would fail at once for every queue of the group, every time. False if that failed."""
        try:
            await guarded(replace_spoiled_lists(self.client, [group.interrupt_key, *keys]),
                          "replacing a spoiled wake list")
        except Exception as exc:  # the wait's own backoff takes over
            logger.debug("wake hub: could not replace a spoiled wake list (%s)", exc)
            return False
        logger.warning("wake hub: replaced a wake list holding another Redis type (edited by hand?)")
        return True

    async def _deliver(self, group: _Group, key: str) -> None:
        if key == group.interrupt_key:
            return
        futures = group.waiters.get(key)
        while futures:
            future, on_wake = futures.popleft()
            if not futures:  # out of the next wait at once, or its next marker would come back here
                del group.waiters[key]
                group.timeouts.pop(key, None)
            if not future.done():
                future.set_result(None)
                if on_wake is not None:
                    on_wake()
                return
        # Nobody here waits for this queue any more: put the marker back for another process.
        self.returned += 1
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.lpush(key, "1")
                pipe.ltrim(key, 0, 0)
                await guarded(pipe.execute(), "returning a wake-up marker")
        except Exception as exc:  # the marker's queue is probed by its safety net anyway
            logger.debug("wake hub: could not return a marker (%s)", exc)
