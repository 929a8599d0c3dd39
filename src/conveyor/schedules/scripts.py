"""Typed wrappers of the schedule scripts (store transitions and maintenance batches).

Loaded with the core `Script` class; files ending in `-0.lua` take a variable number of keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from conveyor.redis.connection import RedisClient
from conveyor.redis.keys import QueueKeys
from conveyor.redis.scripts import Script
from conveyor.schedules.keys import ScheduleKeys

LUA_DIR = Path(__file__).with_name("lua")
CHANGES_MAXLEN = 1000


_S = {
    p.name.removesuffix(".lua").rsplit("-", 1)[0]: Script.load(p.name, LUA_DIR) for p in sorted(LUA_DIR.glob("*.lua"))
}


@dataclass(frozen=True, slots=True)
class Claimed:
    """A due schedule this scheduler now holds: its stored envelope and the run it was due at."""

    schedule_id: str
    due_ms: int
    envelope: str


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
        self, now_ms: int, token: str, lease_ms: int, limit: int
    ) -> tuple[int | None, list[Claimed]]:
        k = self.k
        reply = await _S["claim"](self.client, (k.next, k.claims, k.defs), (now_ms, token, lease_ms, limit))
        wake = int(reply[0]) if reply[0] != "" else None
        claimed = [Claimed(str(reply[i]), int(float(reply[i + 1])), str(reply[i + 2]))
                   for i in range(1, len(reply), 3)]
        return wake, claimed

    async def advance(
        self, schedule_id: str, token: str, due_ms: int, next_ms: int | None, last: str
    ) -> bool:
        k = self.k
        args = (schedule_id, token, due_ms, "" if next_ms is None else str(next_ms), last, CHANGES_MAXLEN)
        return int(await _S["advance"](self.client, (k.next, k.claims, k.last, k.changes), args)) == 1



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
