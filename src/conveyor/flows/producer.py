"""Writes a validated flow tree: one script on a standalone server (all or nothing), one per
(level, slot) on a Cluster, parents before their children (docs/flows.md, "Creating a flow")."""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from conveyor.errors import FlowBusyError, IdempotencyConflictError, InvalidFlowError
from conveyor.flows.model import FlowNode, flatten
from conveyor.job import Job
from conveyor.redis.faults import faults_as_connection_failed, redis_call
from conveyor.redis.flow_scripts import PARENT_HAS_RESULT, PARENT_NEW, FlowNodeArgs, add_nodes
from conveyor.redis.keys import QueueKeys, registry_key
from conveyor.redis.spoiled import is_wrong_type, refuse_spoiled

if TYPE_CHECKING:
    from conveyor.queue import Queue

_CALL_NODES = 1000  # nodes per script call on a Cluster


class FlowProducer:
    """Starts flows; `queue_of(name)` gives the Queue (client, prefix, defaults, payload limit) of
    each queue a tree names."""

    def __init__(self, queue_of: Callable[[str], Queue]) -> None:
        self.queue_of = queue_of

    async def add(
        self, root: FlowNode, *, check: Callable[[FlowNode, str], None] | None = None, parse: Any = None
    ) -> Job[Any]:
        """Validate the whole tree, then write it; returns the root job. Sending the same tree again
        with the same root `job_id` writes only what is missing."""
        flat = flatten(root, self.queue_of, check=check)
        queue = self.queue_of(root.queue)
        created = await write_nodes(queue, [args for _, args in flat.nodes], [d for d, _ in flat.nodes])
        return Job(queue, flat.nodes[0][1].job_id, created=created[0], parse=parse)


async def write_nodes(queue: Queue, nodes: list[FlowNodeArgs], depths: list[int]) -> list[bool]:
    """Write encoded nodes (parents before children); returns `created` per node."""
    client = queue.client
    names = sorted({n.keys.queue for n in nodes})
    await _refuse_partitioned(queue, names)
    await redis_call(client.sadd(registry_key(queue.prefix), *names))
    maxlen = queue.events_maxlen
    cluster = isinstance(client, RedisCluster)
    counted = await _counted_by_parent(queue, nodes, in_one_call=not cluster)
    if not cluster:
        flags = [PARENT_HAS_RESULT if c else "" for c in counted]
        return [c for _, c in await add_nodes(client, nodes, maxlen, flags)]
    await refuse_spoiled(client, "flow-add-0", _written_keys(nodes))
    await _refuse_taken_ids(queue, nodes)
    index = {f"{n.keys.queue}:{n.job_id}": i for i, n in enumerate(nodes)}
    created: dict[int, bool] = {}
    order = sorted(range(len(nodes)), key=lambda i: (depths[i], key_slot(nodes[i].keys.meta.encode())))
    for _, group in groupby(order, key=lambda i: (depths[i], key_slot(nodes[i].keys.meta.encode()))):
        idx = list(group)
        for start in range(0, len(idx), _CALL_NODES):
            part = idx[start:start + _CALL_NODES]
            flags = [PARENT_NEW if created.get(index.get(nodes[i].parent, -1), False)
                     else PARENT_HAS_RESULT if counted[i] else "" for i in part]
            reply = await add_nodes(client, [nodes[i] for i in part], maxlen, flags)
            for i, (_, c) in zip(part, reply, strict=True):
                created[i] = c
    return [created[i] for i in range(len(nodes))]


async def _counted_by_parent(queue: Queue, nodes: list[FlowNodeArgs], *, in_one_call: bool) -> list[bool]:
    """Per node (parents first): whether its parent holds its result already, read now, or it is
    below such a node. Such a node completed; if its record went since (result_ttl=0, retention),
    the script does not write it again, so a flow sent again runs no child twice. A parent in the
    same script call (`in_one_call`: a standalone server) is read by the script itself, atomically."""
    index = {f"{n.keys.queue}:{n.job_id}": i for i, n in enumerate(nodes)}
    asked: list[int] = []
    pipe = queue.client.pipeline(transaction=False)
    for i, n in enumerate(nodes):
        if not n.parent or (in_one_call and n.parent in index):
            continue
        parent_idx = index.get(n.parent)
        if parent_idx is not None:
            parent_key = nodes[parent_idx].keys.job(nodes[parent_idx].job_id)
        else:  # dynamic children: the parent is the running job
            pq, _, pid = n.parent.partition(":")
            parent_key = QueueKeys(pq, queue.prefix).job(pid)
        pipe.hexists(parent_key, f"r:{n.keys.queue}:{n.job_id}")
        asked.append(i)
    found = await _records_read(pipe) if asked else []
    counted = [False] * len(nodes)
    for i, has in zip(asked, found, strict=True):
        counted[i] = bool(has)  # (a parent record of another type holds nothing)
    for i, n in enumerate(nodes):  # below a node not written again, nothing is
        parent_idx = index.get(n.parent)
        if parent_idx is not None and counted[parent_idx] and not in_one_call:
            counted[i] = True
    return counted


async def _refuse_taken_ids(queue: Queue, nodes: list[FlowNodeArgs]) -> None:
    """On a Cluster the tree is written by several scripts, parents first: an id taken by a job that is
    not this node, and a cancellation of an earlier run of the flow still under way (the checks
    flow-add-0.lua makes), are looked for before the first write, so such a tree is refused whole
    rather than after its upper levels were written."""
    pipe = queue.client.pipeline(transaction=False)
    for n in nodes:
        pipe.hmget(n.keys.job(n.job_id), "name", "data", "parent", "kids", "state", "pcx")
        pipe.hexists(n.keys.outbox, "!" + n.job_id)
    found = [[None] * 6 if r is None else r for r in await _records_read(pipe)]
    index = {f"{n.keys.queue}:{n.job_id}": i for i, n in enumerate(nodes)}
    anew: list[bool] = []  # written anew (nodes come parents first)
    for i, n in enumerate(nodes):
        (name, data, parent, kids, state, pcx), cancelling = found[2 * i], found[2 * i + 1]
        parent_new = n.parent in index and anew[index[n.parent]]
        if name is not None:
            mine = n.data.decode() if isinstance(n.data, bytes) else n.data
            wanted = " ".join(n.kids)
            if name != n.name or data != mine or (parent or "") != n.parent or not _starts_with(kids or "", wanted):
                raise IdempotencyConflictError(n.job_id, "name, data or place in a flow")
            if pcx is not None and parent_new and state == "active":
                raise FlowBusyError(n.job_id)
        anew.append(name is None or (pcx is not None and parent_new and state == "cancelled"))
        if anew[i] and n.kids and cancelling:
            raise FlowBusyError(n.job_id)


async def _records_read(pipe: Any) -> list[Any]:
    """The pipeline's replies, None for a read of a job record of another type (edited by hand: no
    job, as flow-add-0.lua reads it); any other error is raised."""
    out: list[Any] = []
    with faults_as_connection_failed("reading a flow's records"):
        for reply in await pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception):
                if not is_wrong_type(reply):
                    raise reply
                reply = None
            out.append(reply)
    return out


def _written_keys(nodes: list[FlowNodeArgs]) -> list[str]:
    """The queue keys the nodes' scripts write (checked by flow-add-0.lua in its own slot), read before
    the first script on a Cluster, where an upper level is written before a lower one fails (each key
    once: refuse_spoiled drops repeats)."""
    keys: list[str] = []
    for k in dict.fromkeys(n.keys for n in nodes):
        keys += [k.meta, k.ready, k.delayed, k.waiting_children, k.cancelled, k.outbox, k.events]
    for n in nodes:
        if n.group and not n.kids and not n.delay_ms:  # a ready leaf joins its group
            k = n.keys
            keys += [k.groups, k.groups_capped, k.group_rotation, k.groups_parked, k.limits,
                     k.group_ready(n.group), k.group(n.group)]
    return keys


def _starts_with(kids: str, wanted: str) -> bool:
    """Whether the children list `kids` begins with the references `wanted`, reference by reference
    ("q:k-1" does not begin "q:k-10"); more children after them are dynamic ones."""
    return kids.startswith(wanted) and (len(kids) == len(wanted) or not wanted or kids[len(wanted)] == " ")


async def _refuse_partitioned(queue: Queue, names: list[str]) -> None:
    """A queue that Redis records as partitioned is served by partition, not under its plain keys,
    and a flow writes plain keys: a child there would never run, a parent never hear of its
    children. Callers holding plain handles (`Queue.add_flow`, dynamic children) are checked here."""
    from conveyor.partitions.layout import read_layouts

    for name, layout in (await read_layouts(queue.client, queue.prefix, names)).items():
        if layout is not None:
            raise InvalidFlowError("root", f"queue {name!r} is partitioned: flows run on plain queues only")
