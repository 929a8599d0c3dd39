"""Key names of the schedule store. All share the hash tag `{schedules}`, so one Cluster slot holds
every schedule and each store transition is one script over known keys."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.redis.keys import QueueKeys


@dataclass(frozen=True, slots=True)
class ScheduleKeys:
    prefix: str = "cv"

    def __post_init__(self) -> None:
        QueueKeys("schedules", self.prefix)  # validates the prefix the same way queues do

    def _k(self, suffix: str) -> str:
        return f"{self.prefix}:{{schedules}}:{suffix}"

    @property
    def defs(self) -> str:
        """hash: schedule id -> JSON {"schedule": ..., "anchor_ms": ...}"""
        return self._k("defs")

    @property
    def versions(self) -> str:
        """hash: schedule id -> version, bumped by every definition change (optimistic locking)"""
        return self._k("ver")

    @property
    def next(self) -> str:
        """zset: schedule id scored by its next run (epoch ms); paused and ended ones are absent"""
        return self._k("next")

    @property
    def claims(self) -> str:
        """hash: schedule id -> "token|expiry_ms" while a scheduler fires its due ticks"""
        return self._k("claims")

    @property
    def last(self) -> str:
        """hash: schedule id -> JSON of the last pass that fired (tick, job id, skipped count)"""
        return self._k("last")

    @property
    def changes(self) -> str:
        """stream: one entry per change; idle schedulers block on it to re-plan at once"""
        return self._k("changes")

    def run_now(self, job_key: str) -> str:
        """string: JSON {job_id, body} of a run-now sent with an Idempotency-Key (`job_key`: the
        run's idempotency key, schedules/enqueue.py run_now_key), kept for that key's life"""
        return self._k(job_key)
