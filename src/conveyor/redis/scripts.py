"""Lua loader and one typed wrapper per script; callers never build KEYS/ARGV by index.

Each `lua/<name>-<nkeys>.lua` may pull shared helpers with `--@include <file>` or `--@lazy <file>`
(from `lua/includes/`), flattened here once at import (redis/lua_flatten.py). Calls go by EVALSHA and
fall back to EVAL when the server lost its script cache (restart, failover), which also re-caches the
script. Every Redis fault comes out as `ConnectionFailedError` (redis/faults.py); a script that
refuses its arguments raises `ScriptInputError`; one that meets a key edited by hand into another type
raises `SpoiledKeyError` naming it (redis/spoiled.py). Nothing here resends a script: the callers that may
(the worker's trips) are idempotent by design.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from redis.exceptions import NoScriptError, ResponseError

from conveyor.errors import InvalidOptionError, ScriptInputError
from conveyor.events import event_head
from conveyor.redis.codes import ScriptCode
from conveyor.redis.connection import RedisClient, SyncRedisClient
from conveyor.redis.durability import Durability, durable_eval, durable_eval_sync
from conveyor.redis.faults import faults_as_connection_failed
from conveyor.redis.keys import QueueKeys
from conveyor.redis.lua_flatten import flatten
from conveyor.redis.spoiled import is_wrong_type, replace_spoiled_lists, spoiled_key_error, spoiled_key_error_sync

LUA_DIR = Path(__file__).with_name("lua")
# Jobs deleted per obliterate call (one bounded script run each).
OBLITERATE_BATCH = 500


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str
    num_keys: int  # 0: the script takes any number of keys

    @classmethod
    def load(cls, filename: str, directory: Path = LUA_DIR) -> Script:
        """A script file of `directory` (core scripts by default), with core includes flattened."""
        source = flatten((directory / filename).read_text(), LUA_DIR / "includes")
        num_keys = int(filename.rsplit("-", 1)[1].removesuffix(".lua"))
        return cls(filename.removesuffix(".lua"), source, hashlib.sha1(source.encode()).hexdigest(), num_keys)

    async def __call__(
        self, client: RedisClient, keys: Sequence[str], args: Sequence[Any], durability: Durability | None = None
    ) -> Any:
        """Run once. With an enabled `durability`, the reply comes only after the write is as durable
        as asked (DurabilityError otherwise)."""
        if self.num_keys and len(keys) != self.num_keys:
            raise AssertionError(f"{self.name} takes {self.num_keys} keys, got {len(keys)}")
        try:
            with faults_as_connection_failed(f"running {self.name}"):
                if durability is not None and durability.enabled:
                    return await durable_eval(
                        client, self.sha, self.source, keys, args, durability, f"running {self.name}")
                try:
                    return await client.evalsha(self.sha, len(keys), *keys, *args)
                except NoScriptError:
                    return await client.eval(self.source, len(keys), *keys, *args)
        except ResponseError as exc:
            if is_wrong_type(exc):
                raise await spoiled_key_error(client, self.name, keys, exc) from exc
            raise

    def call_sync(
        self, client: SyncRedisClient, keys: Sequence[str], args: Sequence[Any], durability: Durability | None = None
    ) -> Any:
        """The same call on redis-py's synchronous client (sync enqueue; no event loop involved)."""
        if self.num_keys and len(keys) != self.num_keys:
            raise AssertionError(f"{self.name} takes {self.num_keys} keys, got {len(keys)}")
        try:
            with faults_as_connection_failed(f"running {self.name}"):
                if durability is not None and durability.enabled:
                    return durable_eval_sync(
                        client, self.sha, self.source, keys, args, durability, f"running {self.name}")
                try:
                    return client.evalsha(self.sha, len(keys), *keys, *args)
                except NoScriptError:
                    return client.eval(self.source, len(keys), *keys, *args)
        except ResponseError as exc:
            if is_wrong_type(exc):
                raise spoiled_key_error_sync(client, self.name, keys, exc) from exc
            raise


def core_script(name: str) -> Script:
    """A core script by name (e.g. "add"), for scripts elsewhere that wrap one."""
    return _S[name]


def all_script_files() -> list[str]:
    return sorted(p.name for p in LUA_DIR.glob("*.lua"))


_S = {f.removesuffix(".lua").rsplit("-", 1)[0]: Script.load(f) for f in all_script_files()}
_WRAP_ADD = "--@add-5"


def _wrapping_add(script: Script) -> Script:
    """A script holding `--@add-5` (add-keyed) with the core add script's body spliced in there."""
    if _WRAP_ADD not in script.source:
        return script
    source = script.source.replace(_WRAP_ADD, _S["add"].source)
    return Script(script.name, source, hashlib.sha1(source.encode()).hexdigest(), script.num_keys)


_S = {name: _wrapping_add(script) for name, script in _S.items()}


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
    keyed: tuple[str, str, int] | None = None  # (mode, key, window ms): add-keyed-6.lua

    def repeats(self, prev: JobSpecArgs) -> bool:
        """Same options as `prev` and a generated id: sent as 3 arguments ('r')."""
        return (not self.job_id and self.keyed is None and not self.idempotency_key and self.opts == prev.opts
                and self.priority == prev.priority and self.delay_ms == prev.delay_ms
                and self.group == prev.group and self.cost == prev.cost)

    @property
    def plain(self) -> bool:
        """Generated id and default options: sent as 3 arguments instead of 11."""
        return not (self.job_id or self.idempotency_key or self.opts or self.priority or self.delay_ms
                    or self.group or self.cost is not None or self.keyed)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished job as the finish script takes it; see finish-10.lua for the kinds."""

    job_id: str
    token: str
    kind: str
    payload: str | bytes
    number: int
    note: str
    cost: int | None = None  # units the run reported (ctx.report_cost); None = not reported

    def args(self) -> list[Any]:
        return [self.job_id, self.token, self.kind, self.payload, self.number, self.note,
                "" if self.cost is None else self.cost]


OUTCOME_FIELDS = 7  # ARGV entries per outcome in finish-10.lua
CLAIM_HEADER = 2  # next_due_in_ms, hold version
CLAIM_FIELDS = 6  # id, token, attempt, name, data, opts per leased job


# Looks (a minute apart) at which an expired id whose record reads as missing is taken for an orphan
# (recover-stalled-8.lua's ORPHAN_LOOKS: the two must agree).
ORPHAN_LOOKS = 5


class Sweep(NamedTuple):
    recovered: int  # expired leases returned to waiting
    failed: int  # jobs failed for stalling or lapsing too often
    held: int  # jobs waiting for a worker with their handler
    orphans: int = 0  # ids removed from `active` whose record stayed missing (recover-stalled-8.lua)


def _refused(script: str, reply: Any) -> None:
    """Raise ScriptInputError when `reply` is a script's {-6, position, reason}."""
    if isinstance(reply, list) and len(reply) == 3 and reply[0] == ScriptCode.INVALID_INPUT:
        raise ScriptInputError(script, int(reply[1]), str(reply[2]))


class QueueScripts:
    """Typed calls of every script for one queue. `durability` applies to enqueues and recorded
    outcomes (redis/durability.py)."""

    __slots__ = ("_finish_keys", "client", "durability", "k", "maxlen")

    def __init__(
        self, client: RedisClient, keys: QueueKeys, events_maxlen: int, durability: Durability | None = None
    ) -> None:
        self.client = client
        self.k = keys
        self.maxlen = events_maxlen
        self.durability = durability
        k = keys
        self._finish_keys = (
            k.meta, k.ready, k.delayed, k.active, k.completed, k.failed, k.cancelled, k.events, k.wake,
        )

    async def add(self, jobs: Sequence[JobSpecArgs]) -> list[Any]:
        return await self.add_wrapped(_S["add"], jobs)

    async def add_keyed(self, job: JobSpecArgs) -> list[Any]:
        """add-keyed-6: one job that carries a key (debounce, throttle or latest wins)."""
        if job.keyed is None:
            raise ValueError("add_keyed takes a keyed job")
        return await self.add_wrapped(_S["add-keyed"], [job], (self.k.cancelled,), job.keyed)

    async def add_wrapped(
        self, script: Script, jobs: Sequence[JobSpecArgs], extra_keys: Sequence[str] = (),
        extra_args: Sequence[Any] = (),
    ) -> list[Any]:
        """add-5, or a script wrapping its body (a schedule's tick guard): the add's keys and ARGV, then
        the wrapper's own; the same durability and input checks."""
        keys, args = add_arguments(self.k, self.maxlen, jobs)
        reply = await script(self.client, (*keys, *extra_keys), [*args, *extra_args], self.durability)
        _refused(script.name, reply)
        return list(reply)

    async def trip(
        self,
        worker_id: str,
        lease_ms: int,
        want: int,
        *,
        trip_id: str = "",
        record_ttl_ms: int = 0,
        acks: Sequence[str] = (),
        names: Sequence[str] = (),
        outcomes: Sequence[Any] = (),
        count: int = 0,
    ) -> list[Any]:
        """One finish-and-claim round trip (finish-10.lua): `count` outcomes flattened in `outcomes`
        (OUTCOME_FIELDS each), then up to `want` new leases. With a `trip_id` and a record ttl the
        trip is idempotent: sending it again returns the same reply (docs/internals.md, "Trips")."""
        k = self.k
        args: list[Any] = [k.base, worker_id, lease_ms, want, self.maxlen, record_ttl_ms if trip_id else 0,
                           len(acks), len(names), count, *acks, *names, *outcomes]
        keys = (*self._finish_keys, k.trip(trip_id or "-"))
        reply = await _S["finish"](self.client, keys, args, self.durability if count else None)
        _refused("finish", reply)
        return list(reply)

    async def trip_after_wait(
        self,
        wait_keys: Sequence[str],
        block_s: float,
        worker_id: str,
        lease_ms: int,
        want: int,
        *,
        trip_id: str,
        record_ttl_ms: int,
        acks: Sequence[str] = (),
        names: Sequence[str] = (),
    ) -> list[Any]:
        """A claim-only trip that Redis runs as soon as one of `wait_keys` (in the queue's slot) gets
        a marker, or after `block_s`: `BLPOP` and the trip pipelined on one connection, so the claim
        costs no round trip of its own after the wake-up. Standalone and Sentinel only (a Cluster
        pipeline does not keep one connection's order). Idempotent like `trip`: after a fault, send
        the same trip id with `trip`."""
        k = self.k
        args: list[Any] = [k.base, worker_id, lease_ms, want, self.maxlen, record_ttl_ms, len(acks), len(names), 0,
                           *acks, *names]
        keys = (*self._finish_keys, k.trip(trip_id))
        script = _S["finish"]
        with faults_as_connection_failed(f"waiting for work, then running {script.name}"):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.blpop(list(wait_keys), timeout=block_s)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                woke, reply = await pipe.execute(raise_on_error=False)
            if isinstance(woke, ResponseError) and is_wrong_type(woke):
                # A wait list edited into another type (it holds only markers): the trip ran all the
                # same; the list is replaced, or every park would fail at once and spin.
                await replace_spoiled_lists(self.client, wait_keys)
            elif isinstance(woke, Exception):
                raise woke
            if isinstance(reply, NoScriptError):  # the server lost its scripts: the same trip, loaded
                return await self.trip(worker_id, lease_ms, want, trip_id=trip_id, record_ttl_ms=record_ttl_ms,
                                       acks=acks, names=names)
            if isinstance(reply, ResponseError) and is_wrong_type(reply):
                raise await spoiled_key_error(self.client, script.name, keys, reply) from reply
            if isinstance(reply, Exception):
                raise reply
        _refused("finish", reply)
        return list(reply)

    async def claim(self, worker_id: str, lease_ms: int, want: int) -> list[Any]:
        """Lease up to `want` jobs outside the trip protocol: next_due_in_ms, then 6 fields per job."""
        reply = await self.trip(worker_id, lease_ms, want)
        return [reply[0], *reply[CLAIM_HEADER:]]

    async def finish(self, worker_id: str, lease_ms: int, want: int, outcomes: Sequence[Outcome]) -> list[Any]:
        """Record outcomes and lease up to `want` jobs outside the trip protocol: one code per
        outcome, then next_due_in_ms and 6 fields per leased job."""
        flat: list[Any] = []
        for o in outcomes:
            flat += o.args()
        reply = await self.trip(worker_id, lease_ms, want, outcomes=flat, count=len(outcomes))
        n = len(outcomes)
        return [*reply[:n], reply[n], *reply[n + CLAIM_HEADER:]]

    async def extend(self, lease_ms: int, leases: Sequence[tuple[str, str] | tuple[str, str, bool]]) -> list[int]:
        """Heartbeat: (job id, token[, confirm]) per lease; confirm marks the run as started."""
        args: list[Any] = [self.k.base, lease_ms]
        for lease in leases:
            args += [lease[0], lease[1], "1" if len(lease) > 2 and lease[2] else "0"]
        reply = await _S["extend"](self.client, (self.k.active,), args)
        _refused("extend", reply)
        return [int(x) for x in reply]

    async def sweep(self, max_stalls: int, max_lapses: int, limit: int = 1000) -> Sweep:
        """Recover expired leases (recover-stalled-8.lua)."""
        k = self.k
        keys = (k.meta, k.ready, k.active, k.failed, k.cancelled, k.events, k.wake, k.holds)
        reply = await _S["recover-stalled"](self.client, keys, (k.base, max_stalls, max_lapses, limit, self.maxlen))
        _refused("recover-stalled", reply)
        return Sweep(int(reply[0]), int(reply[1]), int(reply[2]), int(reply[3]))

    async def recover_stalled(self, max_stalls: int, limit: int = 1000, max_lapses: int = 10) -> tuple[int, int]:
        recovered, failed, *_ = await self.sweep(max_stalls, max_lapses, limit)
        return recovered, failed

    async def expire_held(self, timeout_ms: int, limit: int = 1000) -> int:
        """Fail jobs that waited longer than `timeout_ms` for a worker with their handler."""
        k = self.k
        reply = await _S["expire-held"](
            self.client, (k.meta, k.failed, k.events, k.holds), (k.base, timeout_ms, limit, self.maxlen)
        )
        _refused("expire-held", reply)
        return int(reply)

    async def obliterate(self, force: bool, limit: int = OBLITERATE_BATCH) -> tuple[int, int]:
        """One bounded step of deleting the queue: (code, remaining), see obliterate-15.lua."""
        k = self.k
        keys = (k.meta, k.ready, k.delayed, k.active, k.completed, k.failed, k.cancelled, k.events, k.wake,
                k.limits, k.group_rotation, k.groups_parked, k.groups_capped, k.groups, k.holds)
        reply = await _S["obliterate"](self.client, keys, (k.base, "1" if force else "0", limit))
        _refused("obliterate", reply)
        return int(reply[0]), int(reply[1])

    async def cancel(self, job_id: str, parent_run: str = "") -> tuple[int, str]:
        """`parent_run`: set when the cancellation is a parent's (the mover), see includes/flow.lua."""
        k = self.k
        keys = (k.ready, k.delayed, k.active, k.cancelled, k.events)
        code, state = await _S["cancel"](self.client, keys, (k.base, job_id, self.maxlen, parent_run))
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
        args = (self.k.base, limit, self.maxlen, event)
        reply = await _S["delete-jobs"](self.client, (state_set, self.k.events), args)
        _refused("delete-jobs", reply)
        return int(reply[0]), int(reply[1])

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
        args = (token, line, max_lines, self.maxlen, job_id, event_head(line))
        return int(await _S["log"](self.client, (k.events, k.job(job_id), k.log(job_id)), args))

    async def stream(
        self, job_id: str, token: str, pieces: Sequence[bytes], max_bytes: int, call: int
    ) -> tuple[int, int, bool]:
        """Append one chunk (in 1-128 pieces, one event each) to a job's streamed output (stream-3.lua):
        (code, offset before the chunk, kept)."""
        k = self.k
        args = (token, max_bytes, self.maxlen, job_id, call, *pieces)
        code, offset, kept = await _S["stream"](self.client, (k.events, k.job(job_id), k.output(job_id)), args)
        return int(code), int(offset), bool(int(kept))


def add_arguments(k: QueueKeys, maxlen: int, jobs: Sequence[JobSpecArgs]) -> tuple[tuple[str, ...], list[Any]]:
    """KEYS and ARGV of add-5.lua for a batch of encoded jobs."""
    args: list[Any] = [k.base, maxlen, len(jobs)]
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
    return (k.meta, k.ready, k.delayed, k.events, k.wake), args


def add_sync(
    client: SyncRedisClient, k: QueueKeys, maxlen: int, jobs: Sequence[JobSpecArgs],
    durability: Durability | None = None,
) -> list[Any]:
    """add-5.lua (add-keyed-6.lua for one keyed job) on a synchronous client: the enqueue transition
    shared with `QueueScripts.add`."""
    keys, args = add_arguments(k, maxlen, jobs)
    script = _S["add"]
    if any(j.keyed for j in jobs):
        if len(jobs) != 1 or jobs[0].keyed is None:
            raise InvalidOptionError("keyed jobs (key, key_mode) are enqueued one at a time, not in bulk")
        script, keys, args = _S["add-keyed"], (*keys, k.cancelled), [*args, *jobs[0].keyed]
    reply = script.call_sync(client, keys, args, durability)
    _refused(script.name, reply)
    return list(reply)
