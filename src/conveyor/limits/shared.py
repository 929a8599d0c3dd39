"""Named limiters in Redis: declaring them, the admission protocol's calls, and their state.

Each limiter has its own hash tag ({lim:<name>}), so on a Cluster it may sit in another slot than
the queues using it. Admission is therefore a protocol of single-slot scripts (docs/limits.md,
"Named limiters"): reserve room in every limiter (a reservation that expires after a lease), claim at
most that many jobs, confirm one hold per leased job (each expiring after a lease unless the worker's
heartbeat extends it), release each hold with the real usage when its job ends. A crash at any point
leaves only reservations and holds that expire: capacity comes back within a lease, never sooner
than it is free, so no limiter is ever over-admitted or driven negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import codec
from conveyor.errors import ScriptInputError, UnknownLimiterError
from conveyor.limits.named import Limiter, check_limiter_name
from conveyor.redis.codes import ScriptCode
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import guarded
from conveyor.redis.keys import LimiterKeys, limiter_index_key
from conveyor.redis.scripts import Script

LUA_DIR = Path(__file__).with_name("lua")
_S = {p.name.removesuffix(".lua").rsplit("-", 1)[0]: Script.load(p.name, LUA_DIR)
      for p in sorted(LUA_DIR.glob("limiter-*.lua"))}
USAGE_MINUTES = 60


def _flat(values: Sequence[Any]) -> dict[str, str]:
    items = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    return dict(zip(items[0::2], items[1::2], strict=True))


def _check(reply: Any, name: str) -> Any:
    if isinstance(reply, list) and reply and reply[0] == ScriptCode.INVALID_INPUT and len(reply) == 3:
        raise ScriptInputError(f"limiter {name}", int(reply[1]), str(reply[2]))
    if isinstance(reply, list) and len(reply) == 3 and reply[0] == ScriptCode.NOT_FOUND and reply[2] in (
            "unknown limiter", b"unknown limiter"):
        raise UnknownLimiterError(f"limiter {name!r} is not declared")
    return reply


@dataclass(frozen=True, slots=True)
class Grant:
    granted: int
    retry_in_ms: int  # -1: wait for a slot to free
    reason: str


class SharedLimiter:
    """One named limiter's Redis side (any process: workers, API, CLI)."""

    def __init__(self, client: RedisClient, name: str, prefix: str = "cv") -> None:
        self.client = client
        self.name = check_limiter_name(name)
        self.prefix = prefix
        self.keys = LimiterKeys(name, prefix)

    async def declare(self, limiter: Limiter) -> bool:
        """Create or change the limiter; True when something changed."""
        if limiter.name != self.name:
            raise ValueError("declaring another limiter's name")
        fields = limiter.fields()
        cfg = fields.pop("cfg")
        args: list[str] = [cfg]
        for k, v in sorted(fields.items()):
            args += [k, v]
        reply = await _S["limiter-declare"](self.client, self.keys.all, args)
        await guarded(self.client.sadd(limiter_index_key(self.prefix), self.name), "registering a limiter")
        return bool(int(reply[0]))

    async def acquire(self, reservation: str, want: int, tokens_in: int, tokens_out: int, ttl_ms: int) -> Grant:
        reply = _check(await _S["limiter-acquire"](
            self.client, self.keys.all, [reservation, want, tokens_in, tokens_out, ttl_ms]), self.name)
        reason = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
        return Grant(int(reply[0]), int(reply[1]), reason)

    async def _settle(self, op: str, reservation: str, ttl_ms: int, args: Sequence[Any]) -> list[int]:
        reply = _check(await _S["limiter-settle"](self.client, self.keys.all, [op, reservation, ttl_ms, *args]),
                       self.name)
        return [int(x) for x in reply]

    async def trim(self, reservation: str, keep: int, ttl_ms: int) -> None:
        await self._settle("trim", reservation, ttl_ms, [keep])

    async def confirm(self, reservation: str, holds: Sequence[str], ttl_ms: int) -> list[int]:
        return await self._settle("confirm", reservation, ttl_ms, holds)

    async def extend(self, holds: Sequence[str], ttl_ms: int) -> list[int]:
        return await self._settle("extend", "", ttl_ms, holds)

    async def release(self, ended: Sequence[tuple[str, int | None, int | None, str, int]], ttl_ms: int) -> list[int]:
        """Each ended job: (hold id, tokens in, tokens out (None: not reported), signal, retry-after ms)."""
        args: list[Any] = []
        for hold, tin, tout, signal, after in ended:
            args += [hold, "" if tin is None else tin, "" if tout is None else tout, signal, after]
        return await self._settle("release", "", ttl_ms, args)

    async def state(self) -> dict[str, Any]:
        """One consistent snapshot: configuration, current levels and the last hour's usage."""
        reply = await _S["limiter-state"](self.client, self.keys.all, [])
        if reply and int(reply[0]) == ScriptCode.NOT_FOUND and len(reply) == 1:
            raise UnknownLimiterError(f"limiter {self.name!r} is not declared")
        return describe(self.name, int(reply[0]), _flat(reply[1]), _flat(reply[2]), int(reply[3]),
                        int(reply[4]), _flat(reply[5]))


def _count(value: str | None) -> int:
    """A stored counter, or 0 when it is not an integer (edited by hand): a report never raises on it."""
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _level(cfg: dict[str, str], st: dict[str, str], dim: str, now: int) -> dict[str, Any] | None:
    t, cap = cfg.get(f"{dim}_t"), cfg.get(f"{dim}_cap")
    if t is None or cap is None:
        return None
    tat = float(st.get(f"{dim}_tat", 0))
    tokens = float(cap) - max(0.0, tat - now) / float(t)
    return {"available": round(tokens, 3),
            "reopens_in_ms": 0 if tokens >= 1 else max(0, round(tat - (float(cap) - 1) * float(t) - now))}


def describe(name: str, now: int, cfg: dict[str, str], st: dict[str, str], open_ids: int, expired: int,
             use: dict[str, str]) -> dict[str, Any]:
    declared = codec.loads(cfg.get("cfg", "{}")) or {}
    levels = {}
    for dim, label in (("req", "requests"), ("tin", "tokens_in"), ("tout", "tokens_out"), ("tok", "tokens")):
        level = _level(cfg, st, dim, now)
        if level is not None:
            levels[label] = {**(declared.get(label) or {}), **level}
    minute = now // 60000
    recent = []
    for m in range(minute - USAGE_MINUTES + 1, minute + 1):
        row = {k: _count(use.get(f"{m}:{s}")) for k, s in
               (("requests", "r"), ("tokens_in", "i"), ("tokens_out", "o"), ("rate_limited", "x"), ("timeouts", "t"))}
        if any(row.values()):
            recent.append({"minute_start_ms": m * 60000, **row})
    climit = st.get("climit")
    adaptive = declared.get("adaptive")
    held = int(float(st.get("held", 0)))
    blk = float(st.get("blk", 0) or 0)
    return {
        "name": name,
        "now_ms": now,
        "config": declared,
        "levels": levels,
        "concurrency": {
            "limit": declared.get("concurrency"),
            "adaptive_limit": (None if not adaptive else
                               int(min(float(climit) if climit else adaptive["maximum"],
                                       declared.get("concurrency") or 10**9))),
            "held": held,
        },
        "paused_until_ms": int(blk) if blk > now else None,
        "open_reservations": open_ids,
        "expired_not_swept": expired,
        "totals": {k: _count(st.get(f)) for k, f in
                   (("ok", "n_ok"), ("rate_limited", "n_429"), ("timeouts", "n_timeout"), ("errors", "n_err"),
                    ("expired", "n_expired"), ("tokens_in", "used_in"), ("tokens_out", "used_out"))},
        "recent": recent,
    }


async def limiter_names(client: RedisClient, prefix: str = "cv") -> list[str]:
    raw = await guarded(client.smembers(limiter_index_key(prefix)), "listing limiters")
    return sorted(v.decode() if isinstance(v, bytes) else str(v) for v in raw)
