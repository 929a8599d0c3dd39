"""A worker's side of the named-limiter admission protocol (shared.py has the Redis side).

Before a trip claims `want` jobs, the gate reserves room for them in every limiter the queue uses (in
name order), keeps the smallest grant and gives the rest back; the trip claims at most that many;
then the gate turns the reservation into one hold per leased job (by lease token), extends the holds
with the heartbeat and releases each with its run's usage and signal when the job ends. A fault at
any step is safe: a reservation or hold that is not confirmed, extended or released expires after
the lease and gives its capacity back (a pending reservation is refunded whole).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.errors import ConnectionFailedError
from conveyor.limits.named import Limiter, LimiterUse
from conveyor.limits.shared import SharedLimiter
from conveyor.redis.connection import RedisClient

if TYPE_CHECKING:
    from conveyor.worker.lease import Lease

logger = logging.getLogger(__name__)

POLL_MS = 250  # retry a claim this soon when a limiter is full and no reopening time is known
CONFIRM_TRIES = 5


class LimiterGate:
    def __init__(self, client: RedisClient, prefix: str, uses: Sequence[LimiterUse], lease_ms: int,
                 declare: Sequence[Limiter] = ()) -> None:
        self.uses = list(uses)
        self.declare = {d.name: d for d in declare}
        self.limiters = [SharedLimiter(client, u.name, prefix) for u in self.uses]
        self.lease_ms = lease_ms
        self.holds: set[str] = set()
        self.waits = 0  # claims a limiter cut short (for stats)

    async def check(self) -> None:
        """Declare the limiters this worker was given; every limiter used must exist
        (UnknownLimiterError otherwise): a typo fails at start, not at the first claim."""
        for limiter in self.limiters:
            if limiter.name in self.declare:
                await limiter.declare(self.declare[limiter.name])
            await limiter.state()

    async def admit(self, reservation: str, want: int) -> tuple[int, int]:
        """(jobs the trip may claim, ms to wait before asking again when cut short; -1 none)."""
        granted, retry = want, -1
        done: list[SharedLimiter] = []
        try:
            for use, limiter in zip(self.uses, self.limiters, strict=True):
                if granted == 0:
                    break
                est = use.estimate
                grant = await limiter.acquire(reservation, granted, est.tokens_in, est.tokens_out, self.lease_ms)
                done.append(limiter)
                if grant.granted < granted:
                    granted = grant.granted
                    retry = grant.retry_in_ms if grant.retry_in_ms >= 0 else POLL_MS
            if granted < want:
                self.waits += 1
                for limiter in done:
                    await limiter.trim(reservation, granted, self.lease_ms)
        except ConnectionFailedError as exc:
            logger.warning("limiter admission failed (%s); its reservations expire unused", exc)
            return 0, POLL_MS
        return granted, retry

    async def confirm(self, reservation: str, tokens: Sequence[str]) -> None:
        """The trip leased jobs `tokens` (maybe fewer than granted): one hold each, the rest refunded."""
        self.holds.update(tokens)
        for limiter in self.limiters:
            for attempt in range(CONFIRM_TRIES):
                try:
                    await limiter.confirm(reservation, tokens, self.lease_ms)
                    break
                except ConnectionFailedError as exc:
                    logger.warning("limiter %s: confirming a claim failed (%s)", limiter.name, exc)
                    await asyncio.sleep(0.05 * 2 ** attempt)

    async def release(self, leases: Sequence[Lease]) -> None:
        ended = [lease for lease in leases if lease.token in self.holds]
        if not ended:
            return
        for lease in ended:
            self.holds.discard(lease.token)
        rows = []
        for lease in ended:
            usage = lease.usage
            signal, after = lease.signal
            rows.append((lease.token, None if usage is None else usage.tokens_in,
                         None if usage is None else usage.tokens_out, signal, after))
        for limiter in self.limiters:
            try:
                await limiter.release(rows, self.lease_ms)
            except ConnectionFailedError as exc:
                logger.warning("limiter %s: release failed (%s); the holds expire within a lease", limiter.name, exc)

    async def extend(self) -> None:
        holds = sorted(self.holds)
        if not holds:
            return
        for limiter in self.limiters:
            try:
                await limiter.extend(holds, self.lease_ms)
            except ConnectionFailedError as exc:
                logger.warning("limiter %s: extending holds failed (%s)", limiter.name, exc)
