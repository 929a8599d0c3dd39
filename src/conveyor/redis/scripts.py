"""Lua loader and one typed wrapper per script; callers never build KEYS/ARGV by index.

Each `lua/<name>-<nkeys>.lua` may pull shared helpers with `--@include <file>` (from `lua/includes/`),
flattened here once at import. Calls go by EVALSHA and fall back to EVAL when the server lost its
script cache (restart, failover), which also re-caches the script.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.errors import ConnectionFailedError
from conveyor.redis.connection import RedisClient
from conveyor.redis.keys import QueueKeys

LUA_DIR = Path(__file__).with_name("lua")
_INCLUDE = re.compile(r"^--@include\s+(\S+)\s*$", re.MULTILINE)


def _flatten(source: str) -> str:
    seen: set[str] = set()

    def expand(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in seen:
            return ""
        seen.add(name)
        return _INCLUDE.sub(expand, (LUA_DIR / "includes" / f"{name}.lua").read_text())

    return _INCLUDE.sub(expand, source)


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str
    num_keys: int

    @classmethod
    def load(cls, filename: str, directory: Path = LUA_DIR) -> Script:
        """A script file of `directory` (core scripts by default), with core includes flattened."""
        source = _flatten((directory / filename).read_text())
        num_keys = int(filename.rsplit("-", 1)[1].removesuffix(".lua"))
        return cls(filename.removesuffix(".lua"), source, hashlib.sha1(source.encode()).hexdigest(), num_keys)

    async def __call__(self, client: RedisClient, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if len(keys) != self.num_keys:
            raise AssertionError(f"{self.name} takes {self.num_keys} keys, got {len(keys)}")
        try:
            try:
                return await client.evalsha(self.sha, self.num_keys, *keys, *args)
            except NoScriptError:
                return await client.eval(self.source, self.num_keys, *keys, *args)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise ConnectionFailedError(f"Redis unreachable while running {self.name}: {exc}") from exc


def core_script(name: str) -> Script:
    """A core script by name (e.g. "add"), for scripts elsewhere that wrap one."""
    return _S[name]


def all_script_files() -> list[str]:
    return sorted(p.name for p in LUA_DIR.glob("*.lua"))


_S = {f.removesuffix(".lua").rsplit("-", 1)[0]: Script.load(f) for f in all_script_files()}


@dataclass(frozen=True, slots=True)
class JobSpecArgs:
    """One job as the add script takes it (already validated and encoded)."""

    job_id: str
    idempotency_key: str
    idempotency_ttl_ms: int
    name: str
    data: str | bytes
    opts: str
    priority: int
    delay_ms: int
    group: str = ""
    cost: int | None = None

    def repeats(self, prev: JobSpecArgs) -> bool:
        """Same options as `prev` and a generated id: sent as 3 arguments ('r')."""
        return (not self.job_id and not self.idempotency_key and self.opts == prev.opts
                and self.priority == prev.priority and self.delay_ms == prev.delay_ms
                and self.group == prev.group and self.cost == prev.cost)

    @property
    def plain(self) -> bool:
        """Generated id and default options: sent as 3 arguments instead of 11."""
        return not (self.job_id or self.idempotency_key or self.opts or self.priority or self.delay_ms
                    or self.group or self.cost is not None)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished job as the finish script takes it; see finish-9.lua for the kinds."""

    job_id: str
    token: str
    kind: str
    payload: str | bytes
    number: int
    note: str
    cost: int | None = None  # units the run reported (ctx.report_cost); None = not reported


class QueueScripts:
    """Typed calls of every script for one queue."""

    __slots__ = ("_claim_keys", "_finish_keys", "client", "k", "maxlen")

    def __init__(self, client: RedisClient, keys: QueueKeys, events_maxlen: int) -> None:
        self.client = client
        self.k = keys
        self.maxlen = events_maxlen
        k = keys
        self._finish_keys = (
            k.meta, k.ready, k.delayed, k.active, k.completed, k.failed, k.cancelled, k.events, k.wake,
        )
        self._claim_keys = (k.meta, k.ready, k.delayed, k.active, k.events, k.wake)

    @property
    def add_keys(self) -> tuple[str, ...]:
        k = self.k
        return (k.meta, k.ready, k.delayed, k.events, k.wake)

    def add_args(self, jobs: Sequence[JobSpecArgs]) -> list[Any]:
        """ARGV of add-5.lua for `jobs` (also used by scripts that wrap the add, e.g. a schedule's tick)."""
        k = self.k
        args: list[Any] = [k.base, self.maxlen, len(jobs)]
        prev: JobSpecArgs | None = None
        for j in jobs:
            if j.plain:
                args += [b"p", j.name, j.data]
            elif prev is not None and j.repeats(prev):
                args += [b"r", j.name, j.data]
            else:
                args += [b"f", j.job_id, j.idempotency_key, j.idempotency_ttl_ms, j.name, j.data, j.opts,
                         j.priority, j.delay_ms, j.group, "" if j.cost is None else j.cost]
            prev = j
        return args

    async def add(self, jobs: Sequence[JobSpecArgs]) -> list[Any]:
        return list(await _S["add"](self.client, self.add_keys, self.add_args(jobs)))

    async def claim(self, worker_id: str, lease_ms: int, want: int) -> list[Any]:
        args = (self.k.base, worker_id, lease_ms, want, self.maxlen)
        return list(await _S["claim"](self.client, self._claim_keys, args))

    async def finish(self, worker_id: str, lease_ms: int, want: int, outcomes: Sequence[Outcome]) -> list[Any]:
        args: list[Any] = [self.k.base, worker_id, lease_ms, want, self.maxlen, len(outcomes)]
        for o in outcomes:
            args += [o.job_id, o.token, o.kind, o.payload, o.number, o.note, "" if o.cost is None else o.cost]
        return list(await _S["finish"](self.client, self._finish_keys, args))

    async def extend(self, lease_ms: int, leases: Sequence[tuple[str, str]]) -> list[int]:
        args: list[Any] = [self.k.base, lease_ms]
        for job_id, token in leases:
            args += [job_id, token]
        return [int(x) for x in await _S["extend"](self.client, (self.k.active,), args)]

    async def recover_stalled(self, max_stalls: int, limit: int = 1000) -> tuple[int, int]:
        k = self.k
        keys = (k.meta, k.ready, k.active, k.failed, k.cancelled, k.events, k.wake)
        recovered, dead = await _S["recover-stalled"](self.client, keys, (k.base, max_stalls, limit, self.maxlen))
        return int(recovered), int(dead)

    async def cancel(self, job_id: str) -> tuple[int, str]:
        k = self.k
        keys = (k.ready, k.delayed, k.active, k.cancelled, k.events)
        code, state = await _S["cancel"](self.client, keys, (k.base, job_id, self.maxlen))
        return int(code), str(state)

    async def retry(self, job_id: str) -> tuple[int, str]:
        k = self.k
        keys = (k.meta, k.ready, k.failed, k.cancelled, k.events, k.wake)
        code, state = await _S["retry"](self.client, keys, (k.base, job_id, self.maxlen))
        return int(code), str(state)

    async def promote(self, job_id: str) -> tuple[int, str]:
        k = self.k
        keys = (k.meta, k.ready, k.delayed, k.events, k.wake)
        code, state = await _S["promote"](self.client, keys, (k.base, job_id, self.maxlen))
        return int(code), str(state)

    async def remove(self, job_id: str) -> tuple[int, str]:
        k = self.k
        keys = (k.ready, k.delayed, k.completed, k.failed, k.cancelled, k.events, k.active)
        code, state = await _S["remove"](self.client, keys, (k.base, job_id, self.maxlen))
        return int(code), str(state)

    async def set_paused(self, paused: bool) -> None:
        k = self.k
        await _S["pause"](self.client, (k.meta, k.events, k.wake), ("1" if paused else "0", self.maxlen))

    async def delete_jobs(self, state_set: str, limit: int, event: str = "") -> tuple[int, int]:
        deleted, remaining = await _S["delete-jobs"](
            self.client, (state_set, self.k.events), (self.k.base, limit, self.maxlen, event)
        )
        return int(deleted), int(remaining)

    async def set_limits(self, group: str, delete: Sequence[str], values: Sequence[tuple[str, str]]) -> None:
        """Replace limit fields of the queue (group '') or of one group; see set-limits-7.lua."""
        k = self.k
        target = k.group(group) if group else k.limits
        keys = (k.meta, target, k.group_rotation, k.groups_parked, k.groups_capped, k.wake, k.events)
        args: list[Any] = [k.base, self.maxlen, group, len(delete), *delete]
        for name, value in values:
            args += [name, value]
        await _S["set-limits"](self.client, keys, args)

    async def limits_state(self, max_groups: int) -> str:
        """JSON snapshot of the limits and groups (limits-state-6.lua)."""
        k = self.k
        keys = (k.meta, k.limits, k.active, k.group_rotation, k.groups_parked, k.groups_capped)
        return str(await _S["limits-state"](self.client, keys, (k.base, max_groups)))

    async def progress(self, job_id: str, token: str, progress_json: str) -> int:
        k = self.k
        args = (token, progress_json, self.maxlen, job_id)
        return int(await _S["progress"](self.client, (k.events, k.job(job_id)), args))

    async def log(self, job_id: str, token: str, line: str, max_lines: int) -> int:
        k = self.k
        args = (token, line, max_lines, self.maxlen, job_id)
        return int(await _S["log"](self.client, (k.events, k.job(job_id), k.log(job_id)), args))
