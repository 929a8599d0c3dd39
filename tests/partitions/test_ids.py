"""A job id or idempotency key names one job across the whole partitioned queue, whatever group
(and so partition) a repeat of it carries; on a standalone server and on a real 3-node Cluster."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import JobState
from conveyor.errors import IdempotencyConflictError
from conveyor.partitions import PartitionedQueue, route_partition
from tests.partitions.conftest import PARTS


def groups_apart_from(name: str) -> tuple[str, str]:
    """Two groups whose partitions differ from each other and from `name`'s own partition."""
    home = route_partition(name, PARTS)
    found: dict[int, str] = {}
    for i in range(1000):
        found.setdefault(route_partition(f"tenant-{i}", PARTS), f"tenant-{i}")
    first, second = (found[p] for p in sorted(found) if p != home)
    return first, second


async def total(pq: PartitionedQueue) -> int:
    return sum((await pq.counts()).values())


@pytest.mark.parametrize("option", ["job_id", "idempotency_key"])
async def test_a_repeat_with_another_group_finds_the_earlier_job(pq: PartitionedQueue, option: str) -> None:
    """The same id (or key) added again with another group, or with none, returns the job first added
    (or its conflict when name or data differ), as a plain queue does. Before, the repeat went to its
    own group's partition, which did not know the id, so a second job was made."""
    name = "invoice-7"
    g1, g2 = groups_apart_from(name)
    first = await pq.add("t", {"x": 1}, group=g1, **{option: name})
    assert first.created
    for group in (g2, None):
        again = await pq.add("t", {"x": 1}, group=group, **{option: name})
        assert (again.id, again.created) == (first.id, False)
    with pytest.raises(IdempotencyConflictError):
        await pq.add("t", {"x": 2}, group=g2, **{option: name})
    bulk = await pq.add_bulk([{"name": "t", "data": {"x": 1}, "options": {option: name, "group": g2}},
                              {"name": "t", "data": {"x": 3}}])
    assert [(j.id, j.created) for j in bulk] == [(first.id, False), (bulk[1].id, True)]
    assert await total(pq) == 2
    record = await pq.get_job(first.id)
    assert record is not None and record.options.get("group") == g1


async def test_an_id_repeated_in_one_batch_with_other_groups_makes_one_job(pq: PartitionedQueue) -> None:
    """Within one `add_bulk` too: the repeats follow the first, wherever its group placed it."""
    g1, g2 = groups_apart_from("invoice-8")
    specs: list[dict[str, Any]] = [
        {"name": "t", "data": 1, "options": {"job_id": "invoice-8", "group": g1}},
        {"name": "t", "data": 1, "options": {"job_id": "invoice-8", "group": g2}},
        {"name": "t", "data": 2, "options": {"idempotency_key": "order-8", "group": g2}},
        {"name": "t", "data": 2, "options": {"idempotency_key": "order-8"}},
    ]
    jobs = await pq.add_bulk(specs)
    assert [j.created for j in jobs] == [True, False, True, False]
    assert jobs[0].id == jobs[1].id == "invoice-8" and jobs[2].id == jobs[3].id
    assert (await pq.counts())[JobState.WAITING] == 2


async def test_a_removed_job_leaves_its_key_to_the_groups_partition(pq: PartitionedQueue) -> None:
    """An idempotency key whose job was removed names no job: a new add makes the job again, in its own
    group's partition (not where the stale key sits), as a plain queue makes it again."""
    g1, g2 = groups_apart_from("order-9")
    first = await pq.add("t", 1, idempotency_key="order-9", group=g1)
    await pq.remove(first.id)
    again = await pq.add("t", 1, idempotency_key="order-9", group=g2)
    assert again.created
    part = await pq.locate(again.id)
    assert part is not None and part.keys.tag == pq.parts[route_partition(g2, PARTS)].keys.tag
