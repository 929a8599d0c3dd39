"""`ctx.wait_for_children()` in a run of a job that has no children (docs/flows.md, "Dynamic children")."""

from __future__ import annotations

from collections import Counter

import pytest

from conveyor import Queue
from conveyor.errors import JobFailedError
from conveyor.flows import FlowNode
from conveyor.worker import JobContext
from tests.flows.conftest import workers


async def test_waiting_for_no_children_fails_the_run_clearly_instead_of_running_it_forever(
    queues: list[Queue],
) -> None:
    """The documented fan-out (add the children unless `all_ended`, then wait) over a list that turns
    out empty added nothing and waited: with no children the job went straight back to waiting with
    its attempt refunded, ran again, found `all_ended` false again, and so on forever. Now waiting
    for no children fails the run with a clear error, once."""
    a, b, _ = queues
    runs: Counter[str] = Counter()

    async def lesson(ctx: JobContext, lesson_id: str) -> list[str]:
        runs[lesson_id] += 1
        topics: list[str] = await ctx.step("retrieve", lambda: [])  # nothing found this time
        children = await ctx.children()
        if not children.all_ended:
            await ctx.add_children([FlowNode(b.name, "generate", t) for t in topics])
            ctx.wait_for_children()
        return list(children.ordered())

    job = await a.add("lesson", "L1", attempts=3)
    async with workers(queues, {a: {"lesson": lesson}}):
        with pytest.raises(JobFailedError, match="no children"):
            await job.result(timeout=30)
    rec = await job.record()
    assert rec.error is not None and rec.error["type"] == "InvalidFlowError"
    assert runs == Counter({"L1": 1})
