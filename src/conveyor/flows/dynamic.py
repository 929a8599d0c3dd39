"""Dynamic children: a running job adds children to itself (docs/flows.md, "Dynamic children").

The parent's bookkeeping is updated first (flow-adopt-2.lua, fenced by the lease), then the children
are written. Children's ids are derived from the parent's id, the call's `key` and their position,
so a run killed between the two steps and run again adopts and writes the same children, not new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidFlowError, LeaseLostError, ScriptInputError
from conveyor.flows.model import MAX_NODES, FlowNode, OnChildFailure, flatten
from conveyor.flows.producer import write_nodes
from conveyor.job import Job
from conveyor.redis import flow_scripts
from conveyor.redis.codes import ScriptCode
from conveyor.redis.flow_scripts import FlowNodeArgs

if TYPE_CHECKING:
    from conveyor.queue import Queue


async def add_children(
    queue_of: Callable[[str], Queue],
    parent_queue: str,
    parent_id: str,
    token: str,
    nodes: Sequence[FlowNode],
    key: str,
    on_child_failure: OnChildFailure | str | None,
    check: Callable[[FlowNode, str], None] | None = None,
) -> list[Job[Any]]:
    if not nodes:
        return []
    if len(nodes) > MAX_NODES:
        raise InvalidFlowError("children", f"at most {MAX_NODES} children per call")
    policy = "" if on_child_failure is None else OnChildFailure(on_child_failure).value
    me = f"{parent_queue}:{parent_id}"
    encoded: list[FlowNodeArgs] = []
    depths: list[int] = []
    refs: list[str] = []
    for i, node in enumerate(nodes):
        child_id = node.options.job_id or f"{parent_id}.{key}.{i}"
        flat = flatten(node, queue_of, root_id=child_id, parent_ref=me, path=f"children[{i}]", check=check)
        refs.append(f"{node.queue}:{child_id}")
        for depth, args in flat.nodes:
            encoded.append(args)
            depths.append(depth)
    if len(encoded) > MAX_NODES:
        raise InvalidFlowError("children", f"a call adds at most {MAX_NODES} jobs")
    parent = queue_of(parent_queue)
    try:
        code = await flow_scripts.adopt(parent.client, parent.keys, parent_id, token, refs, policy)
    except ScriptInputError as exc:
        raise InvalidFlowError("children", exc.reason) from None
    if code == ScriptCode.LEASE_LOST:
        raise LeaseLostError(f"job {parent_id}: lease lost, children not added")
    await write_nodes(parent, encoded, depths)
    return [Job(queue_of(n.queue), r.partition(":")[2]) for n, r in zip(nodes, refs, strict=True)]
