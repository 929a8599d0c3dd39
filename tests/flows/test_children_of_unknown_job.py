"""`Queue.children(job_id)` tells a job that does not exist from a job without children."""

from __future__ import annotations

import pytest

from conveyor import Queue
from conveyor.errors import JobNotFoundError
from conveyor.flows import FlowNode


async def test_children_of_a_job_that_does_not_exist_raise_job_not_found(queues: list[Queue]) -> None:
    """Before, a missing job read as an empty `ChildResults`, the same as a parent whose children
    were not added yet, so a typo in an id looked like a flow with nothing in it."""
    a, b, _ = queues
    with pytest.raises(JobNotFoundError):
        await a.children("no-such-job")
    job = await a.add_flow(FlowNode(a.name, "collect", None, children=[FlowNode(b.name, "square", 2)]))
    children = await a.children(job.id)
    assert children.order == (f"{b.name}:{job.id}.1",) and not children.all_ended
    leaf = await b.add("square", 3)
    assert (await b.children(leaf.id)).order == ()  # a job without children: empty, not an error
