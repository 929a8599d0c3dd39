"""Typed calls of the flow scripts (docs/flows.md): writing a tree, the two halves of the child to
parent hand-over, dynamic children and durable steps. Callers never build KEYS/ARGV by index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.errors import FlowBusyError, IdempotencyConflictError
from conveyor.redis.codes import ScriptCode
from conveyor.redis.connection import RedisClient
from conveyor.redis.keys import QueueKeys
from conveyor.redis.scripts import Script, _refused

_ADD = Script.load("flow-add-0.lua")
_DELIVER = Script.load("flow-deliver-1.lua")
_ACK = Script.load("flow-ack-1.lua")
_SET_ASIDE = Script.load("flow-set-aside-2.lua")
_ADOPT = Script.load("flow-adopt-2.lua")
_CANCEL_KIDS = Script.load("flow-cancel-kids-1.lua")
_RERUN = Script.load("flow-rerun-1.lua")
_STEP = Script.load("step-1.lua")

MAX_STEPS = 100  # durable steps one job may store


@dataclass(frozen=True, slots=True)
class FlowNodeArgs:
    """One node as flow-add-0.lua takes it (validated and encoded)."""

    keys: QueueKeys
    job_id: str
    name: str
    data: str | bytes
    opts: str
    priority: int
    delay_ms: int
    group: str
    cost: int | None
    parent: str  # "<queue>:<id>" or ''
    kids: Sequence[str]  # "<queue>:<id>" of each child, in order
    on_child_failure: str  # '' = fail

    def args(self) -> list[Any]:
        return [self.keys.base, self.job_id, self.name, self.data, self.opts, self.priority, self.delay_ms,
                self.group, "" if self.cost is None else self.cost, self.parent, " ".join(self.kids),
                self.on_child_failure]


PARENT_NEW, PARENT_HAS_RESULT = "1", "2"  # what add_nodes' `parents` says of a node's parent


async def add_nodes(client: RedisClient, nodes: Sequence[FlowNodeArgs], maxlen: int,
                    parents: Sequence[str] | None = None) -> list[tuple[str, bool]]:
    """Write nodes that share one slot (or any nodes on a standalone server), all or nothing:
    (id, created) per node; raises IdempotencyConflictError on an id taken by another job, and
    FlowBusyError while the cancellation of an earlier run of the flow is under way. `parents`: per
    node, PARENT_NEW when an earlier call of this send wrote its parent anew (a Cluster's levels),
    PARENT_HAS_RESULT when its parent (not in this call) held its result when read (the node is
    then not written again if missing), else ''."""
    from conveyor.queue import added_jobs

    metas = list(dict.fromkeys(n.keys.meta for n in nodes))
    args: list[Any] = [maxlen, len(nodes)]
    for i, n in enumerate(nodes):
        args += n.args()
        args.append(parents[i] if parents is not None else "")
    reply = await _ADD(client, metas, args)
    _refused("flow-add", reply)
    if reply and reply[0] == ScriptCode.CONFLICT:
        raise IdempotencyConflictError(str(reply[1]), "name, data or place in a flow")
    if reply and reply[0] == ScriptCode.WRONG_STATE:
        raise FlowBusyError(str(reply[1]))
    return added_jobs(reply)


PARENT_GONE, ALREADY_COUNTED, COUNTED, NOT_A_CHILD = 0, 1, 2, 3  # deliver's answer per child


async def deliver(
    client: RedisClient, parent: QueueKeys, parent_id: str, items: Sequence[tuple[str, str, str]], maxlen: int
) -> list[int]:
    """Count children's ends in their parent (idempotent), `items` = (child ref, kind C|F, result or
    error JSON): per child PARENT_GONE, ALREADY_COUNTED, COUNTED, or NOT_A_CHILD (not among the
    parent's children, or the parent's key is not a job's record: nothing written)."""
    args: list[Any] = [parent.base, parent_id, maxlen, len(items)]
    for item in items:
        args += item
    reply = await _DELIVER(client, (parent.meta,), args)
    _refused("flow-deliver", reply)
    return [int(x) for x in reply]


async def ack(client: RedisClient, keys: QueueKeys, records: Sequence[tuple[str, str]]) -> int:
    """Delete delivered outbox records (field, record as delivered) unless newer ones replaced them."""
    args: list[str] = []
    for field, record in records:
        args += (field, record)
    return int(await _ACK(client, (keys.outbox,), args))


SET_ASIDE_NOW, SET_ASIDE_BEFORE = 1, 2  # set_aside's answer per record (0: neither, nothing done)


async def set_aside(client: RedisClient, keys: QueueKeys, records: Sequence[tuple[str, str]], keep: int) -> list[int]:
    """Move outbox records that cannot be delivered (field, record as read) to <p>outbox-bad in one
    step (at most `keep` kept there): per record SET_ASIDE_NOW, SET_ASIDE_BEFORE (by an earlier call
    whose reply was lost, or another mover), or 0 (delivered or replaced meanwhile)."""
    args: list[Any] = [keep]
    for field, record in records:
        args += (field, record)
    reply = await _SET_ASIDE(client, (keys.outbox, keys.outbox_rejects), args)
    _refused("flow-set-aside", reply)
    return [int(x) for x in reply]


CANCELLED_NOW, CANCEL_REQUESTED, NOTHING_TO_CANCEL, NOT_A_JOB = 0, 1, 2, 3  # cancel_kids' answer per child
MAX_CANCEL_KIDS = 1000  # children per cancel_kids call (flow-cancel-kids-1.lua refuses more)


async def cancel_kids(client: RedisClient, keys: QueueKeys, ids: Sequence[str], run: str, maxlen: int) -> list[int]:
    """Cancel children of a cancelled or removed parent that live on one queue, in one call (at most
    MAX_CANCEL_KIDS), each marked with the parent's `run`: per child CANCELLED_NOW, CANCEL_REQUESTED,
    NOTHING_TO_CANCEL (ended or gone) or NOT_A_JOB (its key holds something else: skipped)."""
    reply = await _CANCEL_KIDS(client, (keys.meta,), (keys.base, maxlen, run, len(ids), *ids))
    _refused("flow-cancel-kids", reply)
    return [int(x) for x in reply]


MAX_RERUN_REFS = 1000  # missing children named per rerun call (flow-rerun-1.lua refuses more)


async def rerun(client: RedisClient, keys: QueueKeys, job_id: str, missing: Sequence[str], maxlen: int) -> bool:
    """Send a parent that ran back from waiting-children to waiting when a child in `missing` (refs the
    caller found without a record or a hand-over, at most MAX_RERUN_REFS) is still uncounted; returns
    whether it was sent back."""
    reply = await _RERUN(client, (keys.meta,), (keys.base, job_id, maxlen, len(missing), *missing))
    _refused("flow-rerun", reply)
    return int(reply) == 1


async def adopt(client: RedisClient, keys: QueueKeys, job_id: str, token: str, refs: Sequence[str],
                on_child_failure: str) -> int:
    """Register children of a running job before they are written; returns how many were new."""
    reply = await _ADOPT(client, (keys.job(job_id), keys.meta), (token, on_child_failure, len(refs), *refs))
    _refused("flow-adopt", reply)
    return int(reply)


async def store_step(client: RedisClient, keys: QueueKeys, job_id: str, token: str, name: str, value: str) -> int:
    """Store a durable step's result: ScriptCode.OK or LEASE_LOST."""
    reply = await _STEP(client, (keys.job(job_id),), (token, name, value, MAX_STEPS))
    _refused("step", reply)
    return int(reply) if int(reply) != ScriptCode.OK else ScriptCode.OK
