"""Typed wrappers of the schedule scripts (store transitions and maintenance batches).

Loaded with the core `Script` class; files ending in `-0.lua` take a variable number of keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.redis.clock import redis_now_ms
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import faults_as_connection_failed
from conveyor.redis.keys import QueueKeys
from conveyor.redis.scripts import JobSpecArgs, QueueScripts, Script, core_script
from conveyor.schedules.keys import ScheduleKeys

LUA_DIR = Path(__file__).with_name("lua")
CHANGES_MAXLEN = 1000


_WRAP_ADD = "--@add-5"


def _load(filename: str) -> Script:
    """A schedule script; one holding `--@add-5` gets the core add script's body spliced in there."""
    script = Script.load(filename, LUA_DIR)
    if _WRAP_ADD not in script.source:
        return script
    source = script.source.replace(_WRAP_ADD, core_script("add").source)
    return Script(script.name, source, hashlib.sha1(source.encode()).hexdigest(), script.num_keys)


_S = {p.name.removesuffix(".lua").rsplit("-", 1)[0]: _load(p.name) for p in sorted(LUA_DIR.glob("*.lua"))}


@dataclass(frozen=True, slots=True)
class Claimed:
    """A due schedule this scheduler now holds: its stored envelope, the run it was due at, and since
    when live schedulers have held it (the first claim of this run, carried over a prompt takeover)."""

    schedule_id: str
    due_ms: int
    envelope: str
    since_ms: int
    token: str = ""  # the claim's own token: a later claim of the same schedule gets another one


class ScheduleScripts:
    __slots__ = ("client", "k")

    def __init__(self, client: RedisClient, keys: ScheduleKeys) -> None:
        self.client = client
        self.k = keys

    async def put(self, schedule_id: str, expected_version: int, envelope: str, next_ms: int | None,
                  reset_claim: bool) -> tuple[bool, int]:
        k = self.k
        code, version = await _S["put"](
            self.client, (k.defs, k.versions, k.next, k.claims, k.changes),
            (schedule_id, str(expected_version), envelope, "" if next_ms is None else str(next_ms),
             "1" if reset_claim else "0", CHANGES_MAXLEN),
        )
        return int(code) == 0, int(version)

    async def delete(self, schedule_id: str) -> bool:
        k = self.k
        keys = (k.defs, k.versions, k.next, k.claims, k.last, k.changes)
        return int(await _S["delete"](self.client, keys, (schedule_id, CHANGES_MAXLEN))) == 1

    async def claim(
        self, now_ms: int, token: str, lease_ms: int, limit: int, grace_ms: int, runs: Sequence[str] | None = None
    ) -> tuple[int | None, list[Claimed]]:
        """Claim due schedules; with `runs` (the built-in ids this scheduler runs), other built-ins
        are left to the schedulers that run them."""
        k = self.k
        args: tuple[str | int, ...] = (now_ms, token, lease_ms, limit, grace_ms)
        if runs is not None:
            args += (" ".join(runs),)
        reply = await _S["claim"](self.client, (k.next, k.claims, k.defs), args)
        wake = int(reply[0]) if reply[0] != "" else None
        claimed = [Claimed(str(reply[i]), int(float(reply[i + 1])), str(reply[i + 2]), int(reply[i + 3]), token)
                   for i in range(1, len(reply), 4)]
        return wake, claimed

    async def advance(
        self, schedule_id: str, token: str, due_ms: int, next_ms: int | None, last: str
    ) -> bool:
        k = self.k
        args = (schedule_id, token, due_ms, "" if next_ms is None else str(next_ms), last, CHANGES_MAXLEN)
        return int(await _S["advance"](self.client, (k.next, k.claims, k.last, k.changes), args)) == 1

    async def renew(self, schedule_id: str, token: str, now_ms: int, lease_ms: int) -> bool:
        """Extend a held claim to now + lease; False when it was lost (nothing written)."""
        reply = await _S["renew"](self.client, (self.k.claims,), (schedule_id, token, now_ms, lease_ms))
        return int(reply) == 1

    async def release(self, schedule_id: str, token: str, now_ms: int) -> bool:
        """Mark a held claim lapsed now (another scheduler takes over at once); False when it was no
        longer this claim's (nothing written)."""
        keys = (self.k.claims, self.k.changes)
        return int(await _S["release"](self.client, keys, (schedule_id, token, now_ms, CHANGES_MAXLEN))) == 1

    async def now_ms(self) -> int:
        """Now on the clock of the node holding the schedule keys, the one every script runs on."""
        with faults_as_connection_failed("reading the schedules' clock"):
            return await redis_now_ms(self.client, self.k.claims)


async def trim_finished(client: RedisClient, keys: QueueKeys, state: str, policy: str, now_ms: int,
                        limit: int) -> tuple[int, bool]:
    deleted, more = await _S["trim-finished"](
        client, (keys.meta, keys.state_set(state)), (keys.base, policy, now_ms, limit)
    )
    return int(deleted), int(more) == 1


async def prune_idempotency(client: RedisClient, keys: QueueKeys, idem_keys: Sequence[str]) -> int:
    if not idem_keys:
        return 0
    return int(await _S["prune-idempotency"](client, idem_keys, (keys.base,)))


async def add_tick_jobs(
    queue: QueueScripts, jobs: Sequence[JobSpecArgs], ticks_key: str, schedule_id: str, first_ms: int,
    last_ms: int, *, mark_on_conflict: bool,
) -> list[Any] | None:
    """add-5 for the jobs of ticks `first_ms`..`last_ms` (oldest first), unless a tick at or after
    `first_ms` was enqueued before (None: nothing written)."""
    extra = (schedule_id, first_ms, last_ms, "1" if mark_on_conflict else "0")
    reply = await queue.add_wrapped(_S["add-tick"], jobs, (ticks_key,), extra)
    return reply or None
