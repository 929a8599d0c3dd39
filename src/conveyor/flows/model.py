"""The flow tree as users describe it, and its validation into encoded nodes before any write."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from conveyor import codec
from conveyor.errors import ConfigurationError, InvalidFlowError, InvalidJobError
from conveyor.options import NO_OPTIONS, JobOptions, JobSpec
from conveyor.redis.flow_scripts import FlowNodeArgs

if TYPE_CHECKING:
    from conveyor.queue import Queue

MAX_NODES = 10_000  # jobs in one flow tree (or one call adding dynamic children)
MAX_DEPTH = 100  # levels below the root


class OnChildFailure(StrEnum):
    """What a parent does when one of its children fails for good (docs/flows.md, "Failure policies")."""

    FAIL = "fail"  # the parent fails at once, naming the child; siblings still run and are counted
    IGNORE = "ignore"  # the parent runs once every child has ended, with the error in the child's place
    CONTINUE = "continue"  # the parent runs at once with the results and errors so far


@dataclass(frozen=True, slots=True)
class FlowNode:
    """One job of a flow: it runs after all its `children` have ended (a leaf runs at once).
    `pipe`: the job's payload is its single child's result (a chain step, see `Conveyor.chain`)."""

    queue: str
    name: str
    data: Any = None
    options: JobOptions = NO_OPTIONS
    children: Sequence[FlowNode] = ()
    on_child_failure: OnChildFailure | str | None = None
    pipe: bool = False

    def with_children(self, children: Sequence[FlowNode], on_child_failure: OnChildFailure | str | None = None
                      ) -> FlowNode:
        return replace(self, children=tuple(children),
                       on_child_failure=on_child_failure if on_child_failure is not None else self.on_child_failure)

    @classmethod
    def from_mapping(cls, value: Any, path: str = "root") -> FlowNode:
        """A node from the HTTP body shape {"queue","name","data","options","children","on_child_failure"};
        a tree over the bounds (MAX_DEPTH levels, MAX_NODES jobs) is an InvalidFlowError naming the node."""
        return node_tree(value, _plain_node, path)


# The fields of a node in the mapping (HTTP body) shape; anything else is refused (trees only).
NODE_FIELDS = frozenset({"queue", "name", "data", "options", "children", "on_child_failure"})

# Builds one node (without its children) from its mapping, its path, queue and name, after the shape
# checks; raises for a node it refuses.
NodeMaker = Callable[[Mapping[str, Any], str, str, str], FlowNode]


def node_tree(value: Any, make: NodeMaker, path: str = "root") -> FlowNode:
    """The one walk of a tree in the mapping shape: checks each node's shape and the tree's bounds
    (InvalidFlowError naming the node), lets `make` check and build the node, then its children."""
    budget = [MAX_NODES]

    def one(value: Any, path: str, depth: int) -> FlowNode:
        if not isinstance(value, Mapping):
            raise InvalidFlowError(path, "a flow node must be a JSON object (a flow is one tree of nodes)")
        unknown = set(value) - NODE_FIELDS
        if unknown:
            raise InvalidFlowError(path, f"unknown fields {sorted(unknown)}; a node has {sorted(NODE_FIELDS)}"
                                         " (trees only)")
        if depth > MAX_DEPTH:
            raise InvalidFlowError(path, f"the tree is deeper than {MAX_DEPTH} levels")
        budget[0] -= 1
        if budget[0] < 0:
            raise InvalidFlowError(path, f"a flow holds at most {MAX_NODES} jobs")
        queue, name = value.get("queue"), value.get("name")
        if not isinstance(queue, str) or not isinstance(name, str):
            raise InvalidFlowError(path, "'queue' and 'name' must be strings")
        children = value.get("children") or []
        if not isinstance(children, list):
            raise InvalidFlowError(path, "'children' must be a list of nodes")
        node = make(value, path, queue, name)
        return replace(node, children=tuple(one(c, f"{path}.children[{i}]", depth + 1)
                                            for i, c in enumerate(children)))

    return one(value, path, 0)


def _plain_node(value: Mapping[str, Any], path: str, queue: str, name: str) -> FlowNode:
    try:
        options = JobOptions.from_mapping(value.get("options") or {})
    except InvalidJobError as exc:
        raise InvalidFlowError(path, str(exc)) from None
    return FlowNode(queue, name, value.get("data"), options, (), value.get("on_child_failure"))


@dataclass(slots=True)
class Flattened:
    """A validated tree: encoded nodes with their depth, root first (parents before children)."""

    nodes: list[tuple[int, FlowNodeArgs]] = field(default_factory=list)


def new_flow_id() -> str:
    """A root id for a flow that did not name one ("fl" + 16 hex; never all digits)."""
    return "fl" + secrets.token_hex(8)


def flatten(
    root: FlowNode,
    queue_of: Callable[[str], Queue],
    *,
    root_id: str | None = None,
    parent_ref: str = "",
    path: str = "root",
    check: Callable[[FlowNode, str], None] | None = None,
) -> Flattened:
    """Validate every node (queue name, job name, payload size, options, policy; `check` adds the
    caller's checks, e.g. known task names) and encode it; raises InvalidFlowError naming the first bad
    node's path. Ids: a node's own `job_id`, else the root's id followed by its position in the tree."""
    out = Flattened()
    base = root_id or root.options.job_id or new_flow_id()
    counter = 0
    # (node, path, depth, parent ref, id)
    stack: list[tuple[FlowNode, str, int, str, str]] = [(root, path, 0, parent_ref, base)]
    while stack:
        node, where, depth, parent, job_id = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidFlowError(where, f"the tree is deeper than {MAX_DEPTH} levels")
        if not isinstance(node, FlowNode):
            raise InvalidFlowError(where, "a child must be a FlowNode")
        kid_ids: list[str] = []
        for child in node.children:
            counter += 1
            kid_ids.append(child.options.job_id or f"{base}.{counter}")
        if len(out.nodes) + len(kid_ids) >= MAX_NODES:
            raise InvalidFlowError(where, f"a flow holds at most {MAX_NODES} jobs")
        args = _encode(node, queue_of, where, job_id, parent, kid_ids, check)
        out.nodes.append((depth, args))
        me = f"{node.queue}:{job_id}"
        for i in range(len(node.children) - 1, -1, -1):
            stack.append((node.children[i], f"{where}.children[{i}]", depth + 1, me, kid_ids[i]))
    ids = [(a.keys.queue, a.job_id) for _, a in out.nodes]
    if len(set(ids)) != len(ids):
        raise InvalidFlowError(path, "two nodes of the tree are the same job (a job id given twice)")
    return out


def _encode(
    node: FlowNode, queue_of: Callable[[str], Queue], where: str, job_id: str, parent: str,
    kid_ids: list[str], check: Callable[[FlowNode, str], None] | None,
) -> FlowNodeArgs:
    try:
        queue = queue_of(node.queue)
        if getattr(queue, "partitioned", False):
            raise InvalidJobError(f"queue {node.queue!r} is partitioned: flows run on plain queues only")
        policy = "" if node.on_child_failure is None else OnChildFailure(node.on_child_failure).value
        if policy and not node.children:
            raise InvalidJobError("on_child_failure applies to a node with children")
        if node.options.idempotency_key is not None:
            raise InvalidJobError("flow jobs take a job_id, not an idempotency key")
        if check is not None:
            check(node, where)
        spec = queue.encode(JobSpec(node.name, node.data, replace(node.options, job_id=job_id)))
        if node.children and spec.delay_ms > 0:
            raise InvalidJobError("delay and run_at apply to a leaf: a parent runs once its children have ended")
    except InvalidFlowError:
        raise
    except ValueError as exc:  # InvalidJobError and the policy enum
        raise InvalidFlowError(where, str(exc)) from None
    except ConfigurationError as exc:  # a bad queue name
        raise InvalidFlowError(where, str(exc)) from None
    opts: dict[str, Any] = codec.loads(spec.opts) if spec.opts else {}
    if parent:
        opts["flow"] = 1  # the worker hurries the hand-over of this job's end (flows/mover.py)
    if node.pipe:
        opts["pipe"] = 1
    return FlowNodeArgs(
        keys=queue.keys, job_id=job_id, name=spec.name, data=spec.data,
        opts=codec.dumps(opts).decode() if opts else "", priority=spec.priority, delay_ms=spec.delay_ms,
        group=spec.group, cost=spec.cost, parent=parent, kids=[f"{c.queue}:{i}" for c, i in
                                                               zip(node.children, kid_ids, strict=True)],
        on_child_failure=policy,
    )
