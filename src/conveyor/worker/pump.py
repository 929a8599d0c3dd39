"""The pump: all hot-path traffic of a worker, as idempotent trips (docs/internals.md, "Trips").

A trip records the outcomes of ended leases and leases up to `want` new jobs in one call of
finish-10.lua. Up to MAX_IN_FLIGHT trips run at once, each asking for part of the free slots (slots
asked for by a trip in flight are reserved, so concurrency holds), so the worker runs one batch while
Redis records the previous one. Each trip carries an id `<worker id>:<seq>`; when its reply is lost to
a fault, the same trip (same id, outcomes and want) is sent again until a reply arrives, and Redis
answers it from the trip's record: the same outcome codes, and the jobs it leased. Nothing is
recorded twice and nothing it leased is orphaned. The next trip acknowledges replies received, so
Redis deletes their records early.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from conveyor import codec
from conveyor.errors import ConnectionFailedError, ScriptInputError
from conveyor.redis.codes import ScriptCode
from conveyor.redis.connection import drop_idle_connections
from conveyor.redis.scripts import CLAIM_FIELDS, CLAIM_HEADER, QueueScripts
from conveyor.worker.lease import Lease

if TYPE_CHECKING:
    from conveyor.limits.gate import LimiterGate

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0  # loops resume within about this long of Redis being usable again
RECORD_TTL_MIN_MS = 60_000  # a trip record outlives the lease (2x) and at least this long
MAX_NAMES_PER_TRIP = 1000  # handler names finish-10.lua takes in one trip; more go in the next trips


def backoff_delay(failures: int) -> float:
    """Delay before retry number `failures` after a fault: doubling from 50 ms, at most 1 s, with
    jitter so a fleet does not retry in step."""
    delay: float = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(failures, 10))
    return delay * random.uniform(0.5, 1.0)


class Trip:
    __slots__ = ("acks", "id", "leases", "names", "sent_at", "wait", "want")

    def __init__(self, trip_id: str, leases: list[Lease], want: int, acks: list[str], names: Sequence[str],
                 wait: tuple[list[str], float] | None = None) -> None:
        self.id = trip_id
        self.leases = leases
        self.want = want
        self.acks = acks
        self.names = names
        self.wait = wait  # a parked claim: Redis runs it once one of these lists gets a marker (or after s)
        self.sent_at = 0.0  # time.monotonic() when it was last sent (before Redis ran it)


class TripPump:
    """Sends trips for a worker. The worker shares its lease table and supplies callbacks; the pump
    owns the buffer of ended leases and the trips in flight, and removes a lease from the table when
    Redis answers for its outcome."""

    def __init__(
        self,
        scripts: QueueScripts,
        queue: str,
        worker_id: str,
        *,
        lease_ms: int,
        batch_size: int,
        free_slots: Callable[[], int],
        handler_names: Sequence[str],
        leases: dict[str, Lease],
        start_jobs: Callable[[list[Any]], None],
        refused: Callable[[Lease, int], None],
        gate: LimiterGate | None = None,
        released: Callable[[], None] | None = None,
    ) -> None:
        """`released`: called when a trip's reserved slots are given back (slots shared between
        the pumps of a partitioned queue: another pump may now take them)."""
        self.scripts = scripts
        self.gate = gate  # named limiters: admit each claim, hold per job, release with the outcome
        self.queue = queue
        self.worker_id = worker_id
        self.lease_ms = lease_ms
        self.record_ttl_ms = max(2 * lease_ms, RECORD_TTL_MIN_MS)
        self.batch_size = batch_size
        self.free_slots = free_slots
        self.handler_names = list(handler_names)
        self.leases = leases  # the worker's lease table: a lease leaves it when its outcome is answered
        self.start_jobs = start_jobs
        self.refused = refused
        self.released = released
        self.ended: list[Lease] = []
        self.kick = asyncio.Event()
        self.closing = False
        self.reserved = 0
        self.failures = 0
        self.backing_off = 0
        self.faults = 0  # trips that met a fault (each is sent again)
        self.trips = 0
        self._seq = 0
        self._in_flight: dict[asyncio.Task[None], Trip] = {}
        self._acks: list[str] = []
        self._hold_version: int | None = None  # hold version handler names were last sent for
        self._names_due = bool(self.handler_names)  # first trip: held jobs may be waiting for us
        self._names_from = 0  # the next handler name to send (they go MAX_NAMES_PER_TRIP per trip)
        self._has_work = True
        self._work_confirmed = False
        self._next_due: float | None = None
        self._due_reached = False  # the timer of _next_due fired and no claim was sent since
        self._error: BaseException | None = None
        self.parked: Trip | None = None  # the parked claim in flight, if any (see park)
        self.idle = asyncio.Event()  # set when a claim found nothing (the waker may block)
        # Called with the leases whose outcomes Redis recorded (the flow mover's cue).
        self.on_recorded: Callable[[list[Lease]], None] | None = None

    # ------------------------------------------------------------------ state for the worker

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def add_ended(self, lease: Lease) -> None:
        self.ended.append(lease)
        if self.gate is not None:
            self._has_work = True  # its trip frees the job's limiter slot: claim again in the same trip
        self.kick.set()

    def wake(self) -> None:
        """More work may be ready (the waker saw a marker)."""
        self._has_work = True
        self.kick.set()

    @property
    def has_work(self) -> bool:
        """The last claim came back full, or a wake-up said more may be ready."""
        return self._has_work

    def park(self, wait_keys: list[str], block_s: float) -> bool:
        """Send a claim that Redis runs once one of `wait_keys` gets a marker, or after `block_s`
        (the wait and the trip pipelined on one connection): an idle worker's pickup is then the
        marker's arrival, not a wake-up followed by a claim. False, sending nothing, when there is
        nothing to claim for now (closing, a trip in flight or backing off, no free slot)."""
        if self.closing or self._in_flight or self.backing_off or self.ended:
            return False
        want = max(0, min(self.free_slots() - self.reserved, self.batch_size))
        if want <= 0:
            return False
        if self._next_due is not None:  # a delayed job (or a limiter) is due then: the wait ends then
            block_s = min(block_s, self._next_due - time.monotonic())
        # At least 10 ms: BLPOP's timeout 0 would block for good.
        self._send(want, wait=(wait_keys, max(0.01, block_s)))
        return True

    def pending(self) -> bool:
        return bool(self.ended or self._in_flight)

    def cancel_in_flight(self) -> list[Lease]:
        """Give up on trips in flight (shutdown with Redis unreachable); returns their leases."""
        stranded = [lease for trip in self._in_flight.values() for lease in trip.leases]
        for task in self._in_flight:
            task.cancel()
        return stranded + self.ended

    # ------------------------------------------------------------------ loop

    async def run(self, busy: Callable[[], bool]) -> None:
        """Until closing and nothing is left to send or run (`busy`: a handler still runs)."""
        while True:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            free = 0 if self.closing else self.free_slots() - self.reserved
            want = max(0, min(free, self.batch_size))
            can_send = len(self._in_flight) < MAX_IN_FLIGHT and not self.backing_off
            # A claim-only trip runs alongside another only when the last claim came back full;
            # otherwise one probe at a time (an idle queue costs one trip per wake-up).
            # A limiter's reopening time that has come claims at once, even beside a trip in flight
            # (a finished job's outcome): waiting for that reply would make the claim late.
            # A parked claim is the claim: it runs when work arrives or its wait (cut to the next
            # due time) ends, so no other claim goes beside it.
            may_claim = want > 0 and self._has_work and self.parked is None and (
                not self._in_flight or self._work_confirmed or self._due_reached)
            if can_send and (self.ended or may_claim or (self._names_due and not self.closing)):
                if may_claim:
                    self._due_reached = False
                self._send(want if may_claim else 0)
                continue
            if self.closing and not busy() and not self.ended and not self._in_flight:
                return
            self.kick.clear()
            timeout = None
            if self._next_due is not None and (not self._in_flight or not self._has_work):
                timeout = max(0.0, self._next_due - time.monotonic())
            try:
                async with asyncio.timeout(timeout):
                    await self.kick.wait()
            except TimeoutError:
                self._next_due = None
                self._has_work = True
                self._due_reached = True

    def _send(self, want: int, wait: tuple[list[str], float] | None = None) -> None:
        self._seq += 1
        names: Sequence[str] = ()
        if self._names_due:
            start = self._names_from
            names = self.handler_names[start:start + MAX_NAMES_PER_TRIP]
            self._names_from = start + MAX_NAMES_PER_TRIP
            if self._names_from >= len(self.handler_names):
                self._names_due, self._names_from = False, 0
        trip = Trip(f"{self.worker_id}:{self._seq}", self.ended, want, self._acks, names, wait)
        if wait is not None:
            self.parked = trip
        self.ended, self._acks = [], []
        self.reserved += want
        task = asyncio.get_running_loop().create_task(self._trip(trip))
        self._in_flight[task] = trip
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        if self._in_flight.pop(task, None) is not None:
            self.kick.set()

    async def _trip(self, trip: Trip) -> None:
        reply: list[Any] | None = None
        reserved = trip.want
        try:
            if self.gate is not None:
                await self._gate_before(trip)
            reply = await self._until_answered(trip)
            if self.gate is not None and trip.want > 0:
                leased = (len(reply) - len(trip.leases) - CLAIM_HEADER) // CLAIM_FIELDS
                first = len(trip.leases) + CLAIM_HEADER
                tokens = [str(reply[first + i * CLAIM_FIELDS + 1]) for i in range(leased)]
                await self.gate.confirm(trip.id, tokens)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: the pump crashes (its supervisor restarts it)
            self.ended = trip.leases + self.ended
            if trip.want > 0:
                self._has_work = True  # unanswered claim (a parked one may have taken a marker): claim again
            self._error = exc
        finally:
            self.reserved -= reserved
            if self.parked is trip:
                self.parked = None
            self._in_flight.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            self.kick.set()
            if trip.want and self.released is not None:
                self.released()
        if reply is not None:  # (no await since the finally: the pump sees the new leases at once)
            self._answered(trip, reply)

    async def _gate_before(self, trip: Trip) -> None:
        """Release the named limiters held by the trip's ended jobs, then reserve room for its claim:
        the trip claims only what every limiter granted; when cut short, the pump sleeps until the
        limiter reopens (or a short poll for a slot)."""
        assert self.gate is not None
        await self.gate.release(trip.leases)
        if trip.want <= 0:
            return
        asked_at = time.monotonic()
        granted, retry_ms = await self.gate.admit(trip.id, trip.want)
        if granted < trip.want:
            trip.want = granted
            if granted == 0:
                self._has_work = False
                self._next_due = asked_at + max(retry_ms, 1) / 1000
                self.idle.set()

    async def _until_answered(self, trip: Trip) -> list[Any]:
        """Send `trip` until a reply arrives: after a fault, the same trip again (idempotent)."""
        refused: set[int] = set()
        while True:
            outcomes: list[Any] = []
            for lease in trip.leases:
                outcomes += lease.outcome  # type: ignore[arg-type]
            self.trips += 1
            trip.sent_at = time.monotonic()
            wait, trip.wait = trip.wait, None  # sent again after a fault, a parked claim runs at once
            try:
                if wait is not None:
                    reply = await self.scripts.trip_after_wait(
                        wait[0], wait[1], self.worker_id, self.lease_ms, trip.want, trip_id=trip.id,
                        record_ttl_ms=self.record_ttl_ms, acks=trip.acks, names=trip.names,
                    )
                    trip.sent_at = time.monotonic()  # Redis ran it when the wait ended, just now
                else:
                    reply = await self.scripts.trip(
                        self.worker_id, self.lease_ms, trip.want, trip_id=trip.id,
                        record_ttl_ms=self.record_ttl_ms, acks=trip.acks, names=trip.names, outcomes=outcomes,
                        count=len(trip.leases),
                    )
            except ConnectionFailedError as exc:
                self.faults += 1
                self.failures += 1
                if self.failures == 1:  # the idle pooled connections are likely dead too
                    await drop_idle_connections(self.scripts.client)
                delay = backoff_delay(self.failures)
                logger.warning("queue %s: trip %s failed (%s); sending it again in %.2fs",
                               self.queue, trip.id, exc, delay)
                self.backing_off += 1
                try:
                    await asyncio.sleep(delay)
                finally:
                    self.backing_off -= 1
                continue
            except ScriptInputError as exc:
                if exc.position < 1 or exc.position in refused:
                    raise
                refused.add(exc.position)
                self._replace_refused(trip.leases[exc.position - 1], exc)
                continue
            self.failures = 0
            return reply

    def _replace_refused(self, lease: Lease, exc: ScriptInputError) -> None:
        """An outcome Redis refused (a value out of range): record the job as failed instead."""
        logger.error("queue %s: job %s: outcome refused by Redis (%s); recording it as failed",
                     self.queue, lease.job_id, exc.reason)
        error = {"type": "InvalidOutcome", "message": f"the outcome could not be recorded: {exc.reason}"}
        lease.outcome = None
        lease.end("F", codec.dumps(error).decode(), -1, "invalid outcome")

    def _answered(self, trip: Trip, reply: list[Any]) -> None:
        n = len(trip.leases)
        leases = self.leases
        for lease, code in zip(trip.leases, reply, strict=False):
            leases.pop(lease.token, None)
            if code:
                self.refused(lease, int(code))
        claimed = reply[n:]
        leased = (len(claimed) - CLAIM_HEADER) // CLAIM_FIELDS
        if n or leased:
            self._acks.append(trip.id)  # Redis kept a record of this trip: let it go
        if n and self.on_recorded is not None:
            self.on_recorded(trip.leases)
        hold_version = int(claimed[1])
        if hold_version and hold_version != self._hold_version:
            self._hold_version = hold_version
            self._names_due, self._names_from = bool(self.handler_names), 0
        want = trip.want
        self._work_confirmed = leased == want > 0
        if want > 0 and leased < want:
            self._has_work = False
            due_in = int(claimed[0])
            # Counted from when the trip was sent, not from when its reply was read: Redis computed
            # `due_in` at some instant in between, so a reply read late (a busy machine) does not
            # make the next claim late too. A rate limit's window log would keep such lateness for
            # good (docs/limits.md, "Lateness is not lost").
            self._next_due = None if due_in < 0 else trip.sent_at + due_in / 1000
            self.idle.set()
        elif want > 0:
            self._has_work = True
        if leased:
            self.start_jobs(claimed)
        self.kick.set()


def describe_code(code: int) -> str:
    if code == ScriptCode.LEASE_LOST:
        return ("its lease had expired before the outcome reached Redis and the job went back to the "
                "queue (it runs again or already ran elsewhere); this outcome is dropped")
    return "the job no longer exists (removed, or its record was not kept)"
