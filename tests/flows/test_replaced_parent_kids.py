"""A keyed job that a newer one replaces (add-keyed-6.lua cancels it while it waits) does what a
cancel does for a flow node: a parent's children that have not ended are cancelled with it (its
outbox's "!<id>" record, which the mover carries out), and nothing is written when that record
cannot be (docs/llm.md, "Keyed jobs"; docs/flows.md). A keyed job is never a flow's child: a keyed
flow node is refused (tests/flows/test_hostile.py), so the only flow node a replacement meets is a
keyed job that adopted children."""

from __future__ import annotations

import re
from typing import Any

import pytest

from conveyor import JobState, Queue, Retry
from conveyor.errors import SpoiledKeyError
from conveyor.flows import FlowNode
from conveyor.worker import JobContext
from tests.conftest import wait_for
from tests.flows.conftest import workers


async def _state_is(q: Queue, job_id: str, state: JobState) -> bool:
    return await q.get_state(job_id) is state


async def _root_waiting_with_a_child(a: Queue, b: Queue, key: str) -> tuple[str, str]:
    """A keyed root that adopted a child in `b` (no worker there: it waits) and went back to
    `delayed` (a retry), so a newer job of its key replaces it."""

    async def parent(ctx: JobContext, data: Any) -> Any:
        await ctx.add_children([FlowNode(b.name, "child", 1)])
        raise Retry(after=3600)

    root = await a.add("parent", None, key=key, key_mode="latest", attempts=3)
    async with workers([a], {a: {"parent": parent}}):
        await wait_for(lambda: _state_is(a, root.id, JobState.DELAYED), 60, what="the root is back in delayed")
    (_, child), = (await root.record()).children
    assert await b.get_state(child) is JobState.WAITING
    return root.id, child


async def test_a_replaced_parent_cancels_its_children_that_have_not_ended(queues: list[Queue]) -> None:
    """Before, keyed replacement cancelled the parent but not its children: a child that had not
    ended went on waiting and ran for a parent that would never take its result. Now the
    replacement leaves the parent's "!<id>" record, as cancel does, and the mover cancels them."""
    a, b, _ = queues
    root, child = await _root_waiting_with_a_child(a, b, "report:1")
    newer = await a.add("other", None, key="report:1", key_mode="latest")
    assert await a.get_state(root) is JobState.CANCELLED
    assert await a.client.hexists(a.keys.outbox, "!" + root)

    async def other(ctx: JobContext, data: Any) -> Any:
        return "newer"

    async with workers([a], {a: {"other": other}}):  # its mover carries out the cancellation
        await wait_for(lambda: _state_is(b, child, JobState.CANCELLED), 60, what="the child is cancelled")
        assert await newer.result(timeout=60) == "newer"


async def test_a_replacement_that_cannot_write_the_outbox_writes_nothing(queues: list[Queue]) -> None:
    """The parent's outbox is checked before the add's first write: of another type, the keyed add
    fails with SpoiledKeyError naming it, the replaced job still waits and no newer job is written."""
    a, b, _ = queues
    root, _child = await _root_waiting_with_a_child(a, b, "report:2")
    await a.client.delete(a.keys.outbox)
    await a.client.rpush(a.keys.outbox, "not", "a", "hash")
    records = [k async for k in a.client.scan_iter(match=a.keys.base + "job:*")]
    with pytest.raises(SpoiledKeyError, match=re.escape(a.keys.outbox)):
        await a.add("other", None, key="report:2", key_mode="latest")
    assert await a.get_state(root) is JobState.DELAYED
    assert [k async for k in a.client.scan_iter(match=a.keys.base + "job:*")] == records
    await a.client.delete(a.keys.outbox)
