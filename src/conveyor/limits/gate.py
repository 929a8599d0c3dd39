"""A worker's side of the named-limiter admission protocol (shared.py has the Redis side).

Before a trip claims `want` jobs, the gate reserves room for them in every limiter the queue uses (in
name order), keeps the smallest grant and gives the rest back; the trip claims at most that many;
then the gate turns the reservation into one hold per leased job (by lease token), extends the holds
with the heartbeat and releases each with its run's usage and signal when the job ends. A fault at
any step is safe: a reservation or hold that is not confirmed, extended or released expires after
the lease and gives its capacity back (a pending reservation is refunded whole).

With a cost ledger (conveyor.costs) the gate is also where usage is recorded (one place: the run's
reported usage corrects the limiters and is priced per tenant, task and day in the same release)
and where a tenant's hard budget admits each grouped run before its handler starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.errors import ConnectionFailedError, ScriptInputError
from conveyor.limits.named import Limiter, LimiterUse, Usage
from conveyor.limits.shared import SharedLimiter
from conveyor.redis.connection import RedisClient

if TYPE_CHECKING:
    from conveyor.costs.ledger import CostLedger, RunUsage
    from conveyor.worker.lease import Lease

logger = logging.getLogger(__name__)

POLL_MS = 250  # retry a claim this soon when a limiter is full and no reopening time is known
CONFIRM_TRIES = 5
MAX_UNRECORDED = 10_000  # usage records kept for the next try while Redis is unreachable
ADMIT_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class RunRefusal:
    """A run the tenant's budget (or an unreachable ledger) does not admit: `kind` 'wait' (back
    until the next period, or for a moment while running runs' reservations fill the budget, the
    group blocked meanwhile), 'fail' (fails the job), 'retry' (back for a second, nothing blocked:
    the ledger could not be asked)."""

    kind: str
    delay_s: float
    message: str


class LimiterGate:
    def __init__(self, client: RedisClient, prefix: str, uses: Sequence[LimiterUse], lease_ms: int,
                 declare: Sequence[Limiter] = (), ledger: CostLedger | None = None) -> None:
        self.uses = list(uses)
        self.declare = {d.name: d for d in declare}
        self.limiters = [SharedLimiter(client, u.name, prefix) for u in self.uses]
        self.lease_ms = lease_ms
        self.holds: set[str] = set()
        self.waits = 0  # claims a limiter cut short (for stats)
        self.ledger = ledger  # cost accounting and budgets (None: off)
        self.budget_runs: dict[str, str] = {}  # lease token -> tenant, runs a budget admitted
        self.refused_runs: set[str] = set()  # lease tokens a budget refused (they never ran)
        self.unrecorded: list[RunUsage] = []  # usage not yet recorded (Redis unreachable)
        self.dropped: list[Lease] = []  # runs whose lease was lost: no trip sends them, the gate still ends them

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
        if not self.limiters:
            return granted, retry
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

    async def admit_run(self, lease: Lease) -> RunRefusal | None:
        """Before a grouped run starts: None when its tenant's budget admits it (its estimate is then
        reserved until the run is recorded), else why not."""
        tenant = lease.options.get("group")
        if self.ledger is None or not isinstance(tenant, str) or not tenant:
            return None
        # Noted before the check is sent: once sent, it may reserve the estimate whatever becomes of
        # its reply (lost, or the run cancelled while it is on the way), and the run's record, with
        # or without usage, is what gives a reservation back when the run ends.
        self.budget_runs[lease.token] = tenant
        try:
            refusal = await self.ledger.admit(lease.token, tenant, self.lease_ms)
        except ConnectionFailedError as exc:
            logger.warning("budget of %s not checked (%s); the job goes back for a second", tenant, exc)
            self.refused_runs.add(lease.token)
            return RunRefusal("retry", ADMIT_RETRY_S, f"the budget of {tenant!r} could not be checked")
        if refusal is None:
            return None
        del self.budget_runs[lease.token]  # refused: nothing was reserved
        self.refused_runs.add(lease.token)
        if refusal.busy:  # not over the budget: back for a moment (the group too), whatever on_hard says
            return RunRefusal("wait", refusal.wait_ms / 1000, refusal.message)
        return RunRefusal(refusal.on_hard, refusal.wait_ms / 1000, refusal.message)

    def drop(self, lease: Lease) -> None:
        """A run ended after its lease was lost: no trip carries its outcome, but what it reported is
        still recorded and what it held (budget reservation, limiter holds) still given back, with the
        next trip or heartbeat, whichever comes first."""
        self.dropped.append(lease)

    async def release(self, leases: Sequence[Lease]) -> None:
        if self.dropped:
            leases = [*self.dropped, *leases]
            self.dropped = []
        await self._record(leases)
        ended = [lease for lease in leases if lease.token in self.holds]
        if not ended:
            return
        for lease in ended:
            self.holds.discard(lease.token)
        rows = []
        for lease in ended:
            usage, (signal, after) = lease.usage, lease.signal
            if lease.token in self.refused_runs:  # never called the provider: refund its estimate
                usage, signal, after = Usage(), "err", 0
            rows.append((lease.token, None if usage is None else usage.tokens_in,
                         None if usage is None else usage.tokens_out, signal, after))
        for lease in ended:
            self.refused_runs.discard(lease.token)
        for limiter in self.limiters:
            try:
                await limiter.release(rows, self.lease_ms)
            except ConnectionFailedError as exc:
                logger.warning("limiter %s: release failed (%s); the holds expire within a lease", limiter.name, exc)

    async def _record(self, leases: Sequence[Lease]) -> None:
        """Price and record the usage each ended run reported (and free its budget reservation);
        kept for the next try when Redis is unreachable (a run is recorded once, by its token)."""
        if self.ledger is None:
            return
        from conveyor.costs.ledger import MAX_RUN_COST, MAX_RUNS_PER_CALL, OVER_BOUND, RunUsage

        for lease in leases:
            tenant = self.budget_runs.pop(lease.token, None)
            if lease.usage is not None or tenant is not None:
                group = lease.options.get("group")
                self.unrecorded.append(RunUsage(lease.token, group if isinstance(group, str) else "", lease.name,
                                                lease.usage))
            if lease.token in self.refused_runs and lease.token not in self.holds:
                self.refused_runs.discard(lease.token)
        while self.unrecorded:
            batch = self.unrecorded[:MAX_RUNS_PER_CALL]
            try:
                replies = await self.ledger.record_runs(batch)
                for run, (code, _cost) in zip(batch, replies, strict=False):
                    if code == OVER_BOUND:
                        logger.error("usage of a run of %s (tenant %r) costs more than %d currency units at the "
                                     "prices set; not recorded", run.task, run.tenant, MAX_RUN_COST)
            except ScriptInputError as exc:  # a record the script refuses: never recordable
                logger.error("usage records refused (%s); %d dropped", exc, len(batch))
            except ConnectionFailedError as exc:
                if len(self.unrecorded) > MAX_UNRECORDED:
                    logger.error("cost ledger unreachable: dropping %d usage records", len(self.unrecorded) -
                                 MAX_UNRECORDED)
                    del self.unrecorded[: len(self.unrecorded) - MAX_UNRECORDED]
                logger.warning("recording usage failed (%s); %d records wait for the next try", exc,
                               len(self.unrecorded))
                return
            del self.unrecorded[: len(batch)]

    async def extend(self) -> None:
        if self.dropped:  # lost runs: the heartbeat ends them when no trip has yet
            await self.release(())
        if self.unrecorded:  # usage a trip could not record: the heartbeat sends it again
            await self._record(())
        if self.ledger is not None and self.budget_runs:
            try:
                await self.ledger.extend([(t, token) for token, t in self.budget_runs.items()], self.lease_ms)
            except ConnectionFailedError as exc:
                logger.warning("extending budget reservations failed (%s)", exc)
        holds = sorted(self.holds)
        if not holds:
            return
        for limiter in self.limiters:
            try:
                await limiter.extend(holds, self.lease_ms)
            except ConnectionFailedError as exc:
                logger.warning("limiter %s: extending holds failed (%s)", limiter.name, exc)
