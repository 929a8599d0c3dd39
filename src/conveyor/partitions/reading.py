"""What read paths (API, dashboard, CLI, metrics, alerts) use instead of a queue's keys: a plain
queue is its own only partition; a partitioned queue's jobs and streams live in its partitions."""

from __future__ import annotations

from conveyor.partitions.queue import PartitionedQueue
from conveyor.queue import Queue


def parts_of(queue: Queue) -> list[Queue]:
    """Every partition that may hold the queue's jobs (the queue itself when not partitioned)."""
    return list(queue.serving) if isinstance(queue, PartitionedQueue) else [queue]


def stream_name(part: Queue) -> str:
    """The name of one events stream: the queue's name, or a partition's tag (`<queue>#<i>.<n>`)."""
    return part.keys.tag or part.name


def queue_of_stream(stream: str) -> str:
    """The queue a `stream_name` belongs to ('#' is in no queue name)."""
    return stream.partition("#")[0]


async def part_holding(queue: Queue, job_id: str) -> Queue:
    """The partition holding `job_id` (its likely partition when no partition has it), so a reader
    of a job's keys or events reads the right slot; the queue itself when not partitioned."""
    if not isinstance(queue, PartitionedQueue):
        return queue
    found = await queue.locate(job_id)
    return found if found is not None else queue.likely_part(job_id)
