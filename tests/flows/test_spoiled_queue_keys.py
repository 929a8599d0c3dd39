"""A flow sent to queues one of whose keys was edited by hand into another Redis type is refused
whole with SpoiledKeyError naming the key, nothing written (docs/reliability.md), on a standalone
server (one script) and on a Cluster (one script per level and slot, the keys read before the first)."""

from __future__ import annotations

import re

import pytest

from conveyor import Queue
from conveyor.errors import SpoiledKeyError
from conveyor.flows import FlowNode
from conveyor.options import JobOptions


async def _spoil(queue: Queue, key: str) -> None:
    await queue.client.delete(key)
    await queue.client.rpush(key, "not", "the", "right", "type")


async def _records(queues: list[Queue]) -> list[str]:
    """Every job record of the queues (each queue's keys live in one slot: SCAN on a Cluster reads all)."""
    out: list[str] = []
    for q in queues:
        out += [k async for k in q.client.scan_iter(match=q.keys.base + "job:*")]
    return out


def _tree(a: Queue, b: Queue, c: Queue, group: str | None = None) -> FlowNode:
    """A root in `a` over a ready leaf, a delayed leaf and a parent in `b` (over a leaf in `c`)."""
    grouped = JobOptions(group=group) if group else JobOptions()
    return FlowNode(a.name, "root", 0, children=[
        FlowNode(b.name, "leaf", 1, options=grouped),
        FlowNode(b.name, "leaf", 2, options=JobOptions(delay=60)),
        FlowNode(b.name, "mid", 3, children=[FlowNode(c.name, "leaf", 4)]),
    ])


@pytest.mark.parametrize("name", ["ready", "delayed", "events", "waiting_children", "meta", "outbox"])
async def test_a_flow_meeting_a_spoiled_queue_key_writes_nothing(queues: list[Queue], name: str) -> None:
    """Before, flow-add-0 wrote the root's record, then met the key of the wrong type while writing a
    node of the second queue: a root waiting for ever for children never written, or leaves written
    in no set. Now every queue key the flow writes is checked before the first write."""
    a, b, c = queues
    key = getattr(b.keys, name)
    await _spoil(b, key)
    with pytest.raises(SpoiledKeyError, match=re.escape(key)):
        await a.add_flow(_tree(a, b, c))
    assert await _records(queues) == []
    assert await a.client.exists(a.keys.waiting_children, c.keys.ready) == 0
    assert await b.client.type(key) == "list"
    await _spoil(b, key)  # obliterate deletes it with the rest of the queue


async def test_a_flow_meeting_a_spoiled_cancelled_set_writes_nothing(queues: list[Queue]) -> None:
    """A flow sent again after its root was cancelled writes anew the children cancelled with it,
    taking their old records out of `cancelled`: that set is checked with the others, at every send."""
    a, b, c = queues
    await _spoil(b, b.keys.cancelled)
    with pytest.raises(SpoiledKeyError, match=re.escape(b.keys.cancelled)):
        await a.add_flow(_tree(a, b, c))
    assert await _records(queues) == []


@pytest.mark.parametrize("name", ["gr", "groups"])
async def test_a_flow_meeting_a_spoiled_group_key_writes_nothing(queues: list[Queue], name: str) -> None:
    """Before, a grouped leaf met its group's keys only when written, after the nodes before it."""
    a, b, c = queues
    key = b.keys.group_ready("g") if name == "gr" else b.keys.groups
    await _spoil(b, key)
    with pytest.raises(SpoiledKeyError, match=re.escape(key)):
        await a.add_flow(_tree(a, b, c, group="g"))
    assert await _records(queues) == []


@pytest.mark.parametrize("where", ["root", "leaf"])
async def test_a_flow_node_whose_record_holds_another_type_is_written_anew(queues: list[Queue], where: str) -> None:
    """A node's record edited into another type is no job, as everywhere else (docs/reliability.md):
    the flow writes the node in its place. Before, the send failed with an error naming no key (and
    on a Cluster with redis's bare WRONGTYPE), and the same flow could never be sent again."""
    a, b, _ = queues
    root = FlowNode(a.name, "root", 0, options=JobOptions(job_id="spoiled-root"),
                    children=[FlowNode(b.name, "leaf", 1)])
    key = a.keys.job("spoiled-root") if where == "root" else b.keys.job("spoiled-root.1")
    await a.client.set(key, "not a hash")
    job = await a.add_flow(root)
    assert await a.client.type(key) == "hash"
    assert await a.client.zscore(a.keys.waiting_children, job.id) is not None
    assert await b.client.zscore(b.keys.ready, "spoiled-root.1") is not None
    assert (await job.record()).pending_children == 1
